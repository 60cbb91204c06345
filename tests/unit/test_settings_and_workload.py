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


@pytest.mark.parametrize(("variable", "value"), [
    ("LABKIT_MAX_ATTEMPTS", "0"), ("LABKIT_IDEMPOTENCY", "maybe"), ("LABKIT_KAFKA_HEAP", "Xmx1g"),
    ("LABKIT_STALE_AFTER_S", "0.1"),
])
def test_every_bad_value_names_its_variable_and_value(variable, value):
    with pytest.raises(SettingsError, match=rf"{variable}='{value}'"):
        Settings.from_env({variable: value})


def test_kafka_heap_is_a_setting_split_into_jvm_flags():
    assert Settings().kafka_heap_flags == ("-Xms256m", "-Xmx512m")
    small = Settings.from_env({"LABKIT_KAFKA_HEAP": "-Xms128m -Xmx384m"})
    assert small.kafka_heap_flags == ("-Xms128m", "-Xmx384m")
    assert small.kafka_jvm_flags[:2] == small.kafka_heap_flags and "-XX:+UseG1GC" in small.kafka_jvm_flags
    quick = small.with_(kafka_quick_start=True).kafka_jvm_flags
    assert "-XX:+UseSerialGC" in quick and "-XX:+UseG1GC" not in quick  # one collector, never two
    assert Settings.from_env(small.env()) == small


def test_defaults_never_read_the_environment(monkeypatch):
    monkeypatch.setenv("LABKIT_TIME_SCALE", "0.5")
    assert Settings().time_scale == 1.0
    assert Settings.from_env().time_scale == 0.5


def test_settings_are_frozen_and_with_validates():
    s = Settings()
    with pytest.raises(ValueError):
        s.time_scale = 2.0
    assert s.with_(time_scale=0.0).time_scale == 0.0 and s.time_scale == 1.0
    with pytest.raises(ValueError):
        s.with_(max_attempts=0)
