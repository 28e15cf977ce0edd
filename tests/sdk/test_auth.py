"""End-user auth with independent clients: the MIOSA SDK's `project_auth`
and `AppAuth`, supabase-auth (GoTrue's Python client), PyJWT (HS256 with
the injected secret, ES256 through PyJWKClient and the JWKS), a real SMTP
server (aiosmtpd), and attacks: forged, expired, cross-environment and
cross-project tokens, reused refresh tokens, brute force."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import statistics
import time
import uuid

import httpx
import jwt
import pytest
from miosa import errors
from miosa.resources.app_auth import AppAuth
from supabase_auth import SyncGoTrueClient
from supabase_auth.errors import AuthApiError

from conftest import Server, resolved

PASSWORD = "correct horse battery"


def admin(mds) -> dict[str, str]:
    return {"Authorization": f"Bearer {mds.admin_key}"}


def new_project(client, name: str) -> dict:
    return client.projects.create(f"{name}-{uuid.uuid4().hex[:6]}")


def enable(mds, project_id: str, **settings) -> dict:
    answer = httpx.post(
        f"{mds.url}/api/v1/projects/{project_id}/auth",
        json=settings,
        headers=admin(mds),
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def configure(mds, project_id: str, **settings) -> dict:
    answer = httpx.patch(
        f"{mds.url}/api/v1/projects/{project_id}/auth",
        json=settings,
        headers=admin(mds),
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def gotrue(url: str) -> SyncGoTrueClient:
    return SyncGoTrueClient(url=url, auto_refresh_token=False, persist_session=False)


def email() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@example.com"


def mail(mds, project_id: str, environment: str) -> list[dict]:
    answer = httpx.get(
        f"{mds.url}/api/v1/projects/{project_id}/auth/mail",
        params={"environment": environment},
        headers=admin(mds),
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def token_in(message: dict) -> str:
    return re.search(r"token: (\S+)", message["body"]).group(1)


def test_sdk_project_auth_and_app_auth(client, mds):
    project = new_project(client, "appauth")
    pid = project["id"]
    assert client.project_auth.status("project", pid)["enabled"] is False

    status = client.project_auth.enable(
        "project", pid, signup_enabled=True, token_expiry_sec=900
    )
    assert status["enabled"] is True and status["state"] == "running"
    assert status["config"]["token_expiry_sec"] == 900
    env = resolved(mds, pid, "production")
    assert env["AUTH_URL"] == status["auth_url"]
    assert re.fullmatch(r"[0-9a-f]{64}", env["AUTH_JWT_SECRET"])
    assert env["AUTH_JWKS_URL"] == env["AUTH_URL"] + "/.well-known/jwks.json"

    # The app, configured only from its environment.
    auth = AppAuth(
        "project", pid, auth_url=env["AUTH_URL"], jwt_secret=env["AUTH_JWT_SECRET"]
    )
    address = email()
    session = auth.signup(address, PASSWORD)
    assert session["userId"].startswith("usr_") and session["expiresAt"]
    claims = auth.verify_token(session["token"])
    assert claims["sub"] == session["userId"]
    assert claims["email"] == address
    assert claims["exp"] - claims["iat"] == 900
    assert claims["iss"] == env["AUTH_URL"] and claims["aud"] == "authenticated"

    login = auth.login(address.upper(), PASSWORD)  # emails are normalised
    assert login["userId"] == session["userId"]
    me = auth.me(login["token"])
    assert me["userId"] == session["userId"] and me["token"] == login["token"]
    with pytest.raises(RuntimeError, match="400.*invalid_credentials"):
        auth.login(address, "wrong password")
    auth.logout(login["token"])
    with pytest.raises(RuntimeError, match="401"):
        auth.me(login["token"])
    auth.me(session["token"])  # another session lives on

    # Settings reach the end-user API at once.
    client.project_auth.update("project", pid, signup_enabled=False)
    with pytest.raises(RuntimeError, match="403"):
        auth.signup(email(), PASSWORD)

    # Disabling keeps users; nothing is injected meanwhile.
    assert client.project_auth.disable("project", pid)["enabled"] is False
    assert "AUTH_URL" not in resolved(mds, pid, "production")
    with pytest.raises(RuntimeError, match="404"):
        auth.login(address, PASSWORD)
    client.project_auth.enable("project", pid)
    assert auth.login(address, PASSWORD)["userId"] == session["userId"]

    # Resources the server does not have are a clean 404.
    with pytest.raises(errors.NotFoundError):
        client.project_auth.status("sandbox", "sbx_missing")
    with pytest.raises(RuntimeError, match="404"):
        AppAuth("project", "proj_other", auth_url=env["AUTH_URL"]).login(address, PASSWORD)


def test_supabase_auth_client_and_refresh_token_reuse(client, mds):
    project = new_project(client, "gotrue")
    # Reuse counts at once here; the grace for concurrent refreshes is below.
    status = enable(mds, project["id"], refresh_reuse_interval_sec=0)
    supabase = gotrue(status["auth_url"])
    address = email()

    signed_up = supabase.sign_up(
        {"email": address, "password": PASSWORD, "options": {"data": {"plan": "pro"}}}
    )
    assert signed_up.user.email == address
    assert signed_up.user.user_metadata == {"plan": "pro"}
    assert signed_up.session is not None

    signed_in = supabase.sign_in_with_password({"email": address, "password": PASSWORD})
    first = signed_in.session
    assert first.expires_in == 3600 and first.expires_at > time.time()
    assert supabase.get_user(first.access_token).user.id == signed_up.user.id
    settings = httpx.get(status["auth_url"] + "/settings").json()
    assert settings["external"]["email"] is True and settings["disable_signup"] is False
    assert httpx.get(status["auth_url"] + "/health").status_code == 200

    # Refresh rotates; the spent token is single-use, and presenting it
    # again revokes the whole family, including its successor.
    second = supabase.refresh_session(first.refresh_token).session
    assert second.refresh_token != first.refresh_token
    assert supabase.get_user(second.access_token).user.email == address
    with pytest.raises(AuthApiError) as reused:
        supabase.refresh_session(first.refresh_token)
    assert reused.value.code == "refresh_token_already_used"
    with pytest.raises(AuthApiError) as revoked:
        supabase.refresh_session(second.refresh_token)
    assert revoked.value.code == "refresh_token_not_found"
    with pytest.raises(AuthApiError):
        supabase.get_user(second.access_token)

    # A new password ends the user's other sessions; then sign out everywhere.
    elsewhere = supabase.sign_in_with_password({"email": address, "password": PASSWORD}).session
    session = supabase.sign_in_with_password({"email": address, "password": PASSWORD}).session
    supabase.set_session(session.access_token, session.refresh_token)
    updated = supabase.update_user({"password": "a new password", "data": {"plan": "team"}})
    assert updated.user.user_metadata == {"plan": "team"}
    with pytest.raises(AuthApiError):
        supabase.get_user(elsewhere.access_token)
    with pytest.raises(AuthApiError):
        supabase.refresh_session(elsewhere.refresh_token)
    assert supabase.get_user(session.access_token).user.email == address
    supabase.sign_out()
    with pytest.raises(AuthApiError):
        supabase.get_user(session.access_token)
    with pytest.raises(AuthApiError) as old:
        supabase.sign_in_with_password({"email": address, "password": PASSWORD})
    assert old.value.code == "invalid_credentials"
    assert supabase.sign_in_with_password({"email": address, "password": "a new password"}).user

    # Bad input: the field is named, the code is GoTrue's.
    for body, field, code in [
        ({"email": "not-an-email", "password": PASSWORD}, "email", "validation_failed"),
        ({"email": email(), "password": "short"}, "password", "weak_password"),
        ({"email": email()}, "password", "validation_failed"),
        ({"email": email(), "password": PASSWORD, "data": {"x": "nul\u0000"}}, "data", "validation_failed"),
        ({"email": email(), "password": PASSWORD, "data": {"x": "y" * 20_000}}, "data", "validation_failed"),
        ({"email": email(), "password": PASSWORD, "data": ["not", "an", "object"]}, "data", "validation_failed"),
    ]:
        answer = httpx.post(status["auth_url"] + "/signup", json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error_code"] == code
        assert answer.json()["error"]["details"]["field"] == field
    duplicate = httpx.post(status["auth_url"] + "/signup", json={"email": address, "password": PASSWORD})
    assert duplicate.status_code == 409 and duplicate.json()["error_code"] == "user_already_exists"
    assert "usr_" not in duplicate.text
    answer = httpx.post(status["auth_url"] + "/signup", content=b"{not json")
    assert answer.status_code == 400

    # Two tabs refreshing at once (or a retry) within the grace are not theft.
    configure(mds, project["id"], refresh_reuse_interval_sec=10)
    tab = supabase.sign_in_with_password({"email": address, "password": "a new password"}).session
    one = supabase.refresh_session(tab.refresh_token).session
    two = supabase.refresh_session(tab.refresh_token).session
    assert one.refresh_token != two.refresh_token
    assert supabase.get_user(two.access_token).user.email == address


def test_pyjwt_verifies_hs256_and_es256_through_the_jwks_across_rotation(client, mds):
    project = new_project(client, "jwks")
    pid = project["id"]
    status = enable(mds, pid)
    env = resolved(mds, pid, "production")
    url = env["AUTH_URL"]
    address = email()
    supabase = gotrue(url)
    supabase.sign_up({"email": address, "password": PASSWORD})

    hs = supabase.sign_in_with_password({"email": address, "password": PASSWORD}).session
    claims = jwt.decode(
        hs.access_token,
        env["AUTH_JWT_SECRET"],
        algorithms=["HS256"],
        audience="authenticated",
        issuer=url,
    )
    assert claims["role"] == "authenticated" and claims["email"] == address

    configure(mds, pid, signing_algorithm="ES256")
    es = supabase.sign_in_with_password({"email": address, "password": PASSWORD}).session
    header = jwt.get_unverified_header(es.access_token)
    assert header["alg"] == "ES256"
    first_kid = header["kid"]
    jwks = jwt.PyJWKClient(env["AUTH_JWKS_URL"], cache_keys=False)
    key = jwks.get_signing_key_from_jwt(es.access_token)
    claims = jwt.decode(es.access_token, key, algorithms=["ES256"], audience="authenticated", issuer=url)
    assert claims["sub"] == hs.user.id
    assert supabase.get_claims(es.access_token)["claims"]["sub"] == hs.user.id

    # Rotation: the standby key starts signing; tokens of the retired key
    # still verify (JWKS and server) until they expire: nobody is logged out.
    rotated = httpx.post(f"{mds.url}/api/v1/projects/{pid}/auth/keys/rotate", headers=admin(mds))
    assert rotated.status_code == 200, rotated.text
    states = {k["kid"]: k["state"] for k in rotated.json()["data"]["keys"]}
    assert states[first_kid] == "retired"
    fresh = supabase.sign_in_with_password({"email": address, "password": PASSWORD}).session
    new_kid = jwt.get_unverified_header(fresh.access_token)["kid"]
    assert new_kid != first_kid and states[new_kid] == "active"
    published = {k["kid"] for k in httpx.get(env["AUTH_JWKS_URL"]).json()["keys"]}
    assert {first_kid, new_kid} <= published and len(published) == 3
    for token in (es.access_token, fresh.access_token):
        key = jwt.PyJWKClient(env["AUTH_JWKS_URL"], cache_keys=False).get_signing_key_from_jwt(token)
        jwt.decode(token, key, algorithms=["ES256"], audience="authenticated", issuer=url)
        assert supabase.get_user(token).user.email == address
    # Under ES256 the shared secret no longer opens anything (apps cannot
    # mint tokens); an HS256 session refreshes into ES256 tokens.
    with pytest.raises(AuthApiError):
        supabase.get_user(hs.access_token)
    forged = jwt.encode(
        {**claims, "exp": int(time.time()) + 600}, env["AUTH_JWT_SECRET"], algorithm="HS256"
    )
    with pytest.raises(AuthApiError):
        supabase.get_user(forged)
    renewed = supabase.refresh_session(hs.refresh_token).session
    assert jwt.get_unverified_header(renewed.access_token)["alg"] == "ES256"


def b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hs256(claims: dict, key: bytes) -> str:
    """HS256 by hand, with a key PyJWT would (rightly) refuse."""
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims)}"
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def test_forged_and_foreign_tokens_are_refused_without_a_500(client, mds):
    project = new_project(client, "forge")
    pid = project["id"]
    enable(mds, pid)
    prod = resolved(mds, pid, "production")
    staging = resolved(mds, pid, "staging")
    assert prod["AUTH_JWT_SECRET"] != staging["AUTH_JWT_SECRET"]
    assert prod["AUTH_URL"] != staging["AUTH_URL"]
    other = new_project(client, "forge-other")
    enable(mds, other["id"])
    foreign = resolved(mds, other["id"], "production")

    address = email()
    # The same person signs up in staging and in another project: separate users.
    sessions = {}
    for name, env in [("prod", prod), ("staging", staging), ("foreign", foreign)]:
        sessions[name] = gotrue(env["AUTH_URL"]).sign_up({"email": address, "password": PASSWORD}).session
    assert len({s.user.id for s in sessions.values()}) == 3
    good = sessions["prod"].access_token
    header, payload, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})

    forged = {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "wrong key": jwt.encode(claims, "0" * 64, algorithm="HS256"),
        "changed payload": f"{header}.{b64({**claims, 'sub': 'usr_someone_else'})}.{signature}",
        "expired": jwt.encode({**claims, "exp": int(time.time()) - 10}, prod["AUTH_JWT_SECRET"], algorithm="HS256"),
        "other issuer": jwt.encode({**claims, "iss": staging["AUTH_URL"]}, prod["AUTH_JWT_SECRET"], algorithm="HS256"),
        "staging token": sessions["staging"].access_token,
        "other project": sessions["foreign"].access_token,
        "HS256 signed with the public key": hs256(claims, httpx.get(prod["AUTH_JWKS_URL"]).content),
        "garbage": "a.b.c",
        "not base64": "!!!.???.***",
        "huge": "e" * 100_000,
    }
    for what, token in forged.items():
        answer = httpx.get(prod["AUTH_URL"] + "/user", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code in (400, 401, 431), (what, answer.status_code, answer.text)
        me = httpx.get(
            f"{prod['AUTH_URL']}/app-auth/project/{pid}/me",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert 400 <= me.status_code < 500, (what, me.status_code)
    assert httpx.get(prod["AUTH_URL"] + "/user", headers={"Authorization": f"Bearer {good}"}).status_code == 200

    # A staging user cannot log in to production with the same password.
    wrong_env = httpx.post(
        prod["AUTH_URL"] + "/token?grant_type=password",
        json={"email": address, "password": PASSWORD},
    )
    assert wrong_env.status_code == 200  # prod has its own user with that address
    # ...whose refresh token is useless in staging.
    cross = httpx.post(
        staging["AUTH_URL"] + "/token?grant_type=refresh_token",
        json={"refresh_token": wrong_env.json()["refresh_token"]},
    )
    assert cross.status_code == 400 and cross.json()["error_code"] == "refresh_token_not_found"

    # Admin routes need the right scope.
    reader = client.api_keys.create(name="reader", scopes=["projects:read"])
    token = reader.get("token") or reader.get("key")
    users = httpx.get(
        f"{mds.url}/api/v1/projects/{pid}/auth/users",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert users.status_code == 403 and users.json()["error"]["code"] == "insufficient_scope"
    # Settings decide who logs in and where mail links lead: auth:write.
    writer = client.api_keys.create(name="writer", scopes=["projects:read", "projects:write"])
    redirect = httpx.patch(
        f"{mds.url}/api/v1/projects/{pid}/auth",
        json={"site_url": "https://attacker.example"},
        headers={"Authorization": f"Bearer {writer.get('token') or writer.get('key')}"},
    )
    assert redirect.status_code == 403, redirect.text
    # Unknown realms are 404s.
    assert httpx.get(f"{mds.url}/auth/v1/proj_nope/production/settings").status_code == 404


def test_login_is_rate_limited_and_unknown_emails_cost_a_hash(client, mds):
    project = new_project(client, "limits")
    pid = project["id"]
    status = enable(mds, pid, login_rate_per_account=3, login_rate_per_ip=1000)
    url = status["auth_url"]
    address = email()
    httpx.post(url + "/signup", json={"email": address, "password": PASSWORD}).raise_for_status()

    codes = []
    for _ in range(4):
        answer = httpx.post(url + "/token?grant_type=password", json={"email": address, "password": "nope"})
        codes.append(answer.status_code)
    assert codes == [400, 400, 400, 429], codes
    assert int(answer.headers["retry-after"]) >= 1
    assert answer.json()["error_code"] == "over_request_rate_limit"
    # Even the right password waits: the account is limited, not the guess.
    assert httpx.post(url + "/token", json={"email": address, "password": PASSWORD}).status_code == 429

    # Per address: 5 attempts so far this minute (or none, if it just
    # turned), against a limit of 7.
    configure(mds, pid, login_rate_per_ip=7, login_rate_per_account=1000)
    codes = [
        httpx.post(url + "/token", json={"email": email(), "password": "x" * 10}).status_code
        for _ in range(12)
    ]
    assert codes[0] == 400 and codes[-1] == 429, codes
    # Behind a local proxy (or an app's backend), the forwarded address is
    # the client: another client is not limited by this one's attempts.
    forwarded = httpx.post(
        url + "/token",
        json={"email": email(), "password": "x" * 10},
        headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.1"},
    )
    assert forwarded.status_code == 400, forwarded.text

    # An unknown email takes as long as a wrong password (a decoy hash).
    configure(mds, pid, login_rate_per_ip=100_000, login_rate_per_account=100_000)
    other = email()
    httpx.post(url + "/signup", json={"email": other, "password": PASSWORD}).raise_for_status()

    def timed(login: str) -> float:
        start = time.perf_counter()
        httpx.post(url + "/token", json={"email": login, "password": "wrong password"})
        return time.perf_counter() - start

    # Interleaved, so that a busy machine slows both alike.
    pairs = [(timed(other), timed(email())) for _ in range(9)]
    known = statistics.median(k for k, _ in pairs)
    unknown = statistics.median(u for _, u in pairs)
    assert 0.5 < unknown / known < 2.0, (known, unknown)
    assert known > 0.005  # argon2id really ran


def test_email_confirmation_and_password_reset_through_the_sink(client, mds):
    project = new_project(client, "mail")
    pid = project["id"]
    enable(mds, pid, email_confirm_required=True, mail_min_interval_sec=0)
    staging = resolved(mds, pid, "staging")
    supabase = gotrue(staging["AUTH_URL"])
    address = email()

    # Someone signs up first with the victim's address; they never confirm
    # it, so the owner's signup takes it over, and their password is void.
    supabase.sign_up({"email": address, "password": "the squatter's password"})
    signed_up = supabase.sign_up({"email": address, "password": PASSWORD})
    assert signed_up.session is None and signed_up.user.email_confirmed_at is None
    with pytest.raises(AuthApiError) as unconfirmed:
        supabase.sign_in_with_password({"email": address, "password": PASSWORD})
    assert unconfirmed.value.code == "email_not_confirmed"
    message, squatters = mail(mds, pid, "staging")
    assert message["to"] == address and message["delivery"] == "captured"
    with pytest.raises(AuthApiError):  # the first mail's token died with the takeover
        supabase.verify_otp({"email": address, "token": token_in(squatters), "type": "signup"})
    confirmed = supabase.verify_otp({"email": address, "token": token_in(message), "type": "signup"})
    assert confirmed.session and confirmed.user.email_confirmed_at is not None
    with pytest.raises(AuthApiError):  # single use
        supabase.verify_otp({"email": address, "token": token_in(message), "type": "signup"})
    supabase.sign_in_with_password({"email": address, "password": PASSWORD})
    with pytest.raises(AuthApiError):
        supabase.sign_in_with_password({"email": address, "password": "the squatter's password"})

    # Recovery: a mail for a known address, the same answer for an unknown one.
    supabase.reset_password_for_email(address)
    supabase.reset_password_for_email(email())
    messages = mail(mds, pid, "staging")
    assert len(messages) == 3 and messages[0]["subject"] == "Reset your password"
    recovered = AppAuth("project", pid, auth_url=staging["AUTH_URL"]).verify(token_in(messages[0]))
    supabase.set_session(recovered["token"], "")
    supabase.update_user({"password": "brand new password"})
    assert supabase.sign_in_with_password({"email": address, "password": "brand new password"}).user

    # The link in the mail works from a browser: 303 to the site with the
    # session in the fragment.
    configure(mds, pid, site_url="https://app.example.com/welcome")
    supabase.reset_password_for_email(address)
    link = re.search(r"(http\S+verify\?token=\S+)", mail(mds, pid, "staging")[0]["body"])
    assert link is None  # the site URL replaces the verify link
    token = token_in(mail(mds, pid, "staging")[0])
    hop = httpx.get(
        staging["AUTH_URL"] + "/verify",
        params={"token": token, "type": "recovery", "redirect_to": "https://app.example.com/reset"},
    )
    assert hop.status_code == 303
    assert hop.headers["location"].startswith("https://app.example.com/reset#access_token=")
    # Another origin is not followed: the link goes to the site instead.
    supabase.reset_password_for_email(address)
    token = token_in(mail(mds, pid, "staging")[0])
    hop = httpx.get(
        staging["AUTH_URL"] + "/verify",
        params={"token": token, "type": "recovery", "redirect_to": "https://evil.example/x"},
    )
    assert hop.status_code == 303
    assert hop.headers["location"].startswith("https://app.example.com/welcome#access_token=")

    # A recovery token mailed to an old address does not confirm a new one.
    supabase.reset_password_for_email(address)
    stale = token_in(mail(mds, pid, "staging")[0])
    session = supabase.sign_in_with_password({"email": address, "password": "brand new password"}).session
    supabase.set_session(session.access_token, session.refresh_token)
    supabase.update_user({"email": f"ceo-{uuid.uuid4().hex[:6]}@victim.example"})
    with pytest.raises(AuthApiError):
        supabase.verify_otp({"email": address, "token": stale, "type": "recovery"})
    supabase.update_user({"email": address})  # back, to confirm it again below
    token = token_in(mail(mds, pid, "staging")[0])
    supabase.verify_otp({"email": address, "token": token, "type": "signup"})

    # A new address must be confirmed again before it can log in.
    session = supabase.sign_in_with_password({"email": address, "password": "brand new password"}).session
    supabase.set_session(session.access_token, session.refresh_token)
    moved = email()
    assert supabase.update_user({"email": moved}).user.email_confirmed_at is None
    with pytest.raises(AuthApiError) as again:
        supabase.sign_in_with_password({"email": moved, "password": "brand new password"})
    assert again.value.code == "email_not_confirmed"
    latest = mail(mds, pid, "staging")[0]
    assert latest["to"] == moved
    supabase.verify_otp({"email": moved, "token": token_in(latest), "type": "signup"})
    assert supabase.sign_in_with_password({"email": moved, "password": "brand new password"}).user

    # Production has no sink: without SMTP nothing is kept that could be used.
    production = resolved(mds, pid, "production")
    gotrue(production["AUTH_URL"]).sign_up({"email": address, "password": PASSWORD})
    [held] = mail(mds, pid, "production")
    assert held["delivery"].startswith("undeliverable") and "token:" not in held["body"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_confirmation_mail_goes_out_over_smtp():
    from aiosmtpd.controller import Controller

    received = []

    class Sink:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope)
            return "250 OK"

    port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    server = Server("--smtp-url", f"smtp://127.0.0.1:{port}", "--smtp-from", "Shop <shop@example.com>")
    try:
        from miosa import Miosa

        client = Miosa(api_key=server.admin_key, base_url=server.url, max_retries=0)
        project = new_project(client, "smtp")
        status = enable(server, project["id"], email_confirm_required=True)
        assert status["warnings"] == []
        address = email()
        gotrue(status["auth_url"]).sign_up({"email": address, "password": PASSWORD})
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        [envelope] = received
        assert envelope.mail_from == "shop@example.com" and envelope.rcpt_tos == [address]
        body = envelope.content.decode()
        token = re.search(r"token: (\S+)", body).group(1)
        deadline = time.monotonic() + 10
        while not mail(server, project["id"], "production") and time.monotonic() < deadline:
            time.sleep(0.05)
        [record] = mail(server, project["id"], "production")
        assert record["delivery"] == "sent" and token not in record["body"]
        session = gotrue(status["auth_url"]).verify_otp({"email": address, "token": token, "type": "signup"})
        assert session.user.email_confirmed_at is not None
    finally:
        server.stop()
        controller.stop()


def test_browsers_may_call_auth_from_any_origin(client, mds):
    project = new_project(client, "cors")
    status = enable(mds, project["id"])
    preflight = httpx.options(
        status["auth_url"] + "/token",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, apikey, x-client-info",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "apikey" in preflight.headers["access-control-allow-headers"]
    answer = httpx.post(status["auth_url"] + "/token", json={}, headers={"Origin": "https://x.example"})
    assert answer.headers["access-control-allow-origin"] == "*"
