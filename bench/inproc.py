"""CPU per request in process (Flask's test client, no server, no network): discovery, JWKS,
introspection and userinfo refusing a bad token, for one source tree.

    python bench/inproc.py .                 # this checkout
    git archive REV idp migrations | tar -x -C /tmp/rev && python bench/inproc.py /tmp/rev

Much steadier than the load benchmark on a shared machine (CPU time of one thread, median of
five runs of 400 requests), so two trees can be compared for a regression in the app itself.
Needs Redis on 127.0.0.1:6379; the database is a temporary SQLite file.
"""
import base64
import os
import secrets
import statistics
import sys
import tempfile
import time

src = sys.argv[1]; sys.path.insert(0, src)
import idp

if os.path.isdir(os.path.join(src, 'idp', 'platform')):
    from idp.platform import keys
    from idp.platform.database import upgrade_database
    from idp.platform.settings import load_settings
    from idp.protocol.agencies import register_client
else:
    from idp import keys
    from idp.agencies import register_client
    from idp.cli import upgrade_database
    from idp.config import load_settings
tmp = tempfile.mkdtemp()
s = load_settings(None, env={}, overrides={"server": {"secret_key": "x" * 40, "issuer": "http://127.0.0.1:5000"},
    "database": {"url": f"sqlite:///{tmp}/db.sqlite3"}, "store": {"url": "redis://127.0.0.1:6379/0", "prefix": f"inproc:{secrets.token_hex(4)}:"},
    "keys": {"dir": f"{tmp}/keys"}, "sms": {"backend": "console"}})
keys.ensure(s.keys.dir)
app = idp.create_app(s)
upgrade_database(app)
with app.app_context():
    c, secret = register_client("Bench", ["http://127.0.0.1:9/cb"])
    cid = c.client_id
cl = app.test_client()
auth = "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()
H = {"Host": "127.0.0.1:5000"}
def disc(): assert cl.get("/.well-known/openid-configuration", headers=H).status_code == 200
def jwks(): assert cl.get("/jwks", headers=H).status_code == 200
def intro(): r = cl.post("/introspect", data={"token": "a.b.c"}, headers={**H, "Authorization": auth}); assert r.status_code == 200, r.data
def userinfo(): r = cl.get("/userinfo", headers={**H, "Authorization": "Bearer a.b.c"}); assert r.status_code == 401, r.status_code
for f in (disc, jwks, intro, userinfo):
    for _ in range(50): f()
    runs = []
    for _ in range(5):
        t = time.process_time(); n = 400
        for _ in range(n): f()
        runs.append((time.process_time() - t) / n * 1e6)
    print(f"{f.__name__:9} {statistics.median(runs):7.0f} us CPU/request")
