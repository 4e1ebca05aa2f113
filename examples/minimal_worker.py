"""A complete pull worker in plain Python (standard library only): lease, compute, post the result."""
import base64, json, sys, urllib.request

SERVER, TOKEN = sys.argv[1], sys.argv[2]          # e.g. http://localhost:8000  my-worker-token


def post(path, body):
    req = urllib.request.Request(SERVER + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json", "Authorization": "Bearer " + TOKEN})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, (json.loads(r.read() or b"null"))


while True:
    status, lease = post("/jobs/lease", {"worker": "minimal", "models": ["word_count"], "wait": 20})
    if status == 204:                                # nothing queued within 20 s: ask again
        continue
    job = lease["job"]
    text = base64.b64decode(job["payload_base64"]).decode()
    result = {"words": len(text.split())}            # your model here
    post(f"/jobs/{job['id']}/result", {"lease_id": lease["lease_id"], "result": result})
