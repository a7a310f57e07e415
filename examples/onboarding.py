"""Example: onboard a new user with parallel steps, an event wait and a sleep.

Trigger it with ``app/user.signed_up`` and data ``{"user_id": "u1", "email": "a@b.c"}``.

    ┌ create-profile ┐
    ├ seed-workspace ┼─> wait for app/user.activated (same user_id, up to 3 days)
    └ send-welcome  ─┘        │ activated                      │ not activated
                              v                                v
                        sleep 1 day -> send-tips          send-nudge

The three first steps run at the same time on whatever workers are free; the wait
and the sleep hold no worker and survive restarts. ``wait_hours`` and
``tips_after_hours`` in the event data shorten the waits for a demo.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import timedelta
from typing import Any

from examples.contacts_work import send_email
from stepstream import Context, Stepstream

ss = Stepstream(app_id="onboarding")


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(os.environ.get("ONBOARDING_DB", "onboarding.db"))
    conn.execute("CREATE TABLE IF NOT EXISTS profiles (user_id TEXT PRIMARY KEY, email TEXT, "
                 "workspace TEXT)")
    return conn


def create_profile(user_id: str, email: str) -> dict[str, str]:
    """Idempotent: a retried step upserts the same row."""
    with _db() as conn:
        conn.execute("INSERT INTO profiles (user_id, email) VALUES (?, ?) ON CONFLICT(user_id) "
                     "DO UPDATE SET email = excluded.email", (user_id, email))
    return {"user_id": user_id}


def seed_workspace(user_id: str) -> dict[str, str]:
    workspace = f"ws-{user_id}"
    with _db() as conn:
        conn.execute("INSERT INTO profiles (user_id, workspace) VALUES (?, ?) "
                     "ON CONFLICT(user_id) DO UPDATE SET workspace = excluded.workspace",
                     (user_id, workspace))
    return {"workspace": workspace}


@ss.function(id="onboard-user", trigger="app/user.signed_up", retries=3)
async def onboard(ctx: Context) -> dict[str, Any]:
    """Set the new user up, then nudge or teach them depending on whether they activate."""
    user_id, email = ctx.event.data["user_id"], ctx.event.data["email"]
    wait = timedelta(hours=float(ctx.event.data.get("wait_hours", 72)))
    tips_after = timedelta(hours=float(ctx.event.data.get("tips_after_hours", 24)))

    _, workspace, _ = await asyncio.gather(
        ctx.step.run("create-profile", create_profile, user_id, email),
        ctx.step.run("seed-workspace", seed_workspace, user_id),
        ctx.step.run("send-welcome", send_email, email, "Welcome aboard",
                     "Your account is ready."))

    activated = await ctx.step.wait_for_event(
        "wait-for-activation", event="app/user.activated",
        if_="async.data.user_id == event.data.user_id", timeout=wait)
    if activated is None:
        await ctx.step.run("send-nudge", send_email, email, "Need a hand?",
                           "You have not activated your account yet.")
        return {"activated": False, "workspace": workspace["workspace"]}

    await ctx.step.sleep("settle-in", tips_after)
    await ctx.step.run("send-tips", send_email, email, "Three tips for your first week",
                       "1. Invite your team. 2. Connect a source. 3. Set up alerts.")
    return {"activated": True, "workspace": workspace["workspace"]}
