"""Submit an images job with typed params through the client openapi-python-client generated
from /openapi.json (run.sh), follow it to the end, download its files and ZIP, and show a
refusal coming back typed.

    python use_client.py http://127.0.0.1:8000 [API_KEY]
"""

import sys
import time

from gen_client import AuthenticatedClient, Client
from gen_client.api.default import get_file, get_job, get_result, list_files, submit_job
from gen_client.models import Error, ImagesJobRequest, ImagesJobRequestParams, Job, Priority

ENDED = ("succeeded", "failed", "cancelled")

server, key = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
# In AUTH_MODE=open there is no key; the client then sends no Authorization header.
client = AuthenticatedClient(base_url=server, token=key) if key else Client(base_url=server)

params = ImagesJobRequestParams(prompt="a lighthouse at dusk", count=2, width=128, height=128)
body = ImagesJobRequest(generator="images", params=params, priority=Priority.HIGH)
answer = submit_job.sync_detailed(client=client, body=body)
print("submit:", answer.status_code, type(answer.parsed).__name__)
job = answer.parsed
assert isinstance(job, Job), answer.content
while job.status.value not in ENDED:
    time.sleep(0.2)
    job = get_job.sync(client=client, job_id=job.id)
print("job:", job.id, job.status.value, job.priority.value, job.params.to_dict())

files = list_files.sync(client=client, job_id=job.id)
print("files:", [(file.name, file.bytes_, file.content_type) for file in files.files])
archive = get_result.sync_detailed(client=client, job_id=job.id)
print("zip:", archive.status_code, archive.content[:2], len(archive.content))
image = get_file.sync_detailed(client=client, job_id=job.id, name=files.files[0].name)
print("file:", image.status_code, image.content[:8])

too_many = ImagesJobRequestParams(prompt="x", count=99)
refused = submit_job.sync_detailed(
    client=client, body=ImagesJobRequest(generator="images", params=too_many)
)
fields = refused.parsed.error.fields.to_dict() if isinstance(refused.parsed, Error) else None
print("refused:", refused.status_code, type(refused.parsed).__name__, fields)
