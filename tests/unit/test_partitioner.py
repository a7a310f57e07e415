import ctypes

from streams.partitioner import murmur2, partition_of

# From Kafka's own tests (UtilsTest.testMurmur2): Java's signed ints.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_is_javas():
    for data, java in JAVA_MURMUR2.items():
        assert ctypes.c_int32(murmur2(data)).value == java


def test_keys_land_where_javas_default_partitioner_puts_them():
    for data, java in JAVA_MURMUR2.items():
        for count in (1, 3, 4, 12):
            expected = (java & 0x7FFFFFFF) % count
            for _ in range(2):  # the second time from the remembered hash
                assert partition_of(data, count) == expected


def test_a_record_without_key_goes_to_some_partition():
    assert {partition_of(None, 4) for _ in range(200)} == {0, 1, 2, 3}
