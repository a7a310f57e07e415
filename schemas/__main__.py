"""``python -m schemas``: add each changed schema as its record's next released version
(``schemas.versions``)."""

from schemas.versions import SCHEMA_DIR, release

added = release()
for path in added:
    print(f"added {path.relative_to(SCHEMA_DIR.parent)}")
if not added:
    print("every current schema is a released version")
