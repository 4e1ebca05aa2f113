"""Rate limits (memory and Redis), CORS, batch limits and security headers."""
import uuid

import pytest

from app import create_app


def make_client(tmp_path, **config):
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}", **config})
    return app.test_client()


def test_rate_limiting_is_off_by_default(client):
    assert all(client.post("/review", data={"review": "fine"}).status_code == 200 for _ in range(20))


def test_rate_limit_answers_429_json_with_retry_after(tmp_path):
    client = make_client(tmp_path, RATELIMIT_DEFAULT="3/minute")
    codes = [client.post("/review", data={"review": "fine"}).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.post("/review", data={"review": "fine"})
    assert limited.is_json and "rate limit exceeded" in limited.json["error"]
    assert int(limited.headers["Retry-After"]) > 0
    assert client.get("/v2/health/ready").status_code in (200, 503)  # health is never limited
    assert client.get("/health/live").status_code == 200


def test_rate_limit_counts_per_api_key(tmp_path):
    client = make_client(tmp_path, RATELIMIT_DEFAULT="2/minute", API_KEYS="alice,bob")
    for key in ("alice", "bob"):
        codes = [client.post("/review", data={"review": "ok"}, headers={"X-API-Key": key}).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 429]


def test_redis_storage_shares_counts_between_servers(tmp_path):
    import redis

    try:
        redis.Redis.from_url("redis://127.0.0.1:6379").ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis on 127.0.0.1:6379 is not reachable: {exc}")
    key = {"X-API-Key": f"shared-{uuid.uuid4().hex}"}  # a fresh key: counts from earlier runs do not apply
    config = {"RATELIMIT_DEFAULT": "3/minute", "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379",
              "API_KEYS": key["X-API-Key"]}
    first, second = make_client(tmp_path, **config), make_client(tmp_path, **config)
    codes = [c.post("/review", data={"review": "ok"}, headers=key).status_code for c in (first, second, first, second)]
    assert codes == [200, 200, 200, 429]


def test_cors_is_off_by_default_and_configurable(tmp_path, client):
    plain = client.get("/v2", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in plain.headers
    allowed = make_client(tmp_path, CORS_ORIGINS="https://app.example")
    ok = allowed.get("/v2", headers={"Origin": "https://app.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = allowed.get("/v2", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_v2_batch_limit_is_413(tmp_path):
    client = make_client(tmp_path, MAX_BATCH=2)
    request = {"inputs": [{"name": "review", "datatype": "BYTES", "shape": [3], "data": ["a", "b", "c"]}]}
    response = client.post("/v2/models/review_sentiment/infer", json=request)
    assert response.status_code == 413 and "limit of 2" in response.json["error"]


def test_pages_carry_security_headers(client):
    page = client.get("/ui/review")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert client.get("/v2").headers["X-Content-Type-Options"] == "nosniff"
