import pytest

from labkit.settings import Settings, SettingsError
from labkit.workload import Workload


def test_settings_come_from_the_environment_only_when_asked():
    s = Settings.from_env({"LABKIT_REDIS_URL": "rediss://user:pw@redis.example:6380/2",
                           "LABKIT_KAFKA_BOOTSTRAP": "k1:9093,k2:9093", "LABKIT_TIME_SCALE": "0.1",
                           "LABKIT_KAFKA_OPT_SECURITY_PROTOCOL": "SASL_SSL", "LABKIT_RETENTION_S": "60"})
    assert s.redis_host_port == ("redis.example", 6380)
    assert s.kafka_config()["bootstrap_servers"] == ["k1:9093", "k2:9093"]
    assert s.kafka_config()["security_protocol"] == "SASL_SSL"
    assert s.time_scale == 0.1 and s.retention_s == 60
    assert Settings.from_env(s.env()) == s  # what child worker processes will see


def test_bad_numbers_are_named():
    with pytest.raises(SettingsError, match="LABKIT_TIME_SCALE"):
        Settings.from_env({"LABKIT_TIME_SCALE": "fast"})


def test_workload_is_seeded_with_hot_hotels():
    a, b = Workload(seed=1, run_id="r"), Workload(seed=1, run_id="r")
    assert a.bookings(50) == b.bookings(50)
    hotels = [x.hotelId for x in a.bookings(1000)]
    hot = sum(hotels.count(Workload.hotel_id(i)) for i in range(3))
    assert 300 < hot < 500  # 40 % go to 3 of 20 hotels
    assert len({x.bookingId for x in Workload(seed=1).bookings(10)} & {x.bookingId for x in a.bookings(10)}) == 0


def test_kafka_options_get_real_types():
    s = Settings.from_env({"LABKIT_KAFKA_OPT_REQUEST_TIMEOUT_MS": "30000",
                           "LABKIT_KAFKA_OPT_SSL_CHECK_HOSTNAME": "false",
                           "LABKIT_KAFKA_OPT_SASL_PLAIN_PASSWORD": "12345"})
    assert s.kafka_config()["request_timeout_ms"] == 30000
    assert s.kafka_config()["ssl_check_hostname"] is False
    assert s.kafka_config()["sasl_plain_password"] == "12345"
    assert Settings.from_env(s.env()) == s
