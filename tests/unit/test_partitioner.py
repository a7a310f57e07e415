from aiokafka.partitioner import DefaultPartitioner

from streams.partitioner import key_partitioner


def test_keys_land_where_aiokafkas_default_partitioner_puts_them():
    default = DefaultPartitioner()
    for count in (1, 3, 4, 12):
        partitions = list(range(count))
        for i in range(500):
            key = f"run-{i:05d}".encode()
            for _ in range(2):  # the second time from the remembered hash
                assert key_partitioner(key, partitions, partitions) == default(
                    key, partitions, partitions)


def test_a_message_without_key_goes_to_an_available_partition():
    assert {key_partitioner(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}
    assert key_partitioner(None, [0, 1], []) in {0, 1}
