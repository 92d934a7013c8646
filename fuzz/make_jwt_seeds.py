#!/usr/bin/env python3
"""Writes seeds/jwt_verify/: tokens for the jwt_verify target, signed with
the fuzz secret of fuzz_targets/common/mod.rs (or deliberately not).
Deterministic; run from fuzz/ after changing it: python3 make_jwt_seeds.py"""
import base64, hashlib, hmac, json, os

SECRET = b"fuzz-secret-fuzz-secret-fuzz-secret-0"
FAR = 4102444800  # 2100-01-01: these seeds stay valid (or invalid) for decades


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def tok(header, claims, key=SECRET, digest=hashlib.sha256, sig=None):
    h = b64(json.dumps(header, separators=(",", ":")).encode())
    c = b64(json.dumps(claims, separators=(",", ":")).encode())
    m = f"{h}.{c}"
    if sig is None:
        sig = b64(hmac.new(key, m.encode(), digest).digest())
    return f"{m}.{sig}"


H = {"alg": "HS256", "typ": "JWT"}
good = {"sub": "u-42", "exp": FAR, "iat": 1700000000, "aud": "skald", "iss": "iss",
        "tenant": "t1", "roles": ["admin"]}
seeds = {
    "valid": tok(H, good),
    "valid-aud-array": tok(H, {**good, "aud": ["other", "skald"]}),
    "valid-nbf-past": tok({"alg": "HS256"}, {**good, "nbf": 1700000000}),
    "expired": tok(H, {**good, "exp": 1000000000}),
    "nbf-future": tok(H, {**good, "nbf": FAR}),
    "wrong-aud": tok(H, {**good, "aud": "other"}),
    "wrong-iss": tok(H, {**good, "iss": "evil"}),
    "no-sub": tok(H, {k: v for k, v in good.items() if k != "sub"}),
    "long-sub": tok(H, {**good, "sub": "x" * 257}),
    "alg-none": tok({"alg": "none", "typ": "JWT"}, good, sig=""),
    "hs512-secret": tok({"alg": "HS512"}, good, digest=hashlib.sha512),
    "kid-ed1": tok({"alg": "HS256", "kid": "ed1"}, good),
    "wrong-key": tok(H, good, key=b"another-secret-another-secret-xx"),
    "garbage": "not.a.jwt",
    "empty": "",
}
os.makedirs("seeds/jwt_verify", exist_ok=True)
for name, t in seeds.items():
    with open(f"seeds/jwt_verify/{name}", "w") as f:
        f.write(t)
