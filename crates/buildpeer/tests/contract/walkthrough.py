"""The README's walkthrough through a client generated from /openapi.json.

crates/buildpeer/tests/it/contract.rs generates the client with
openapi-python-client (package `buildpeer_client`, on PYTHONPATH) and runs
this script against a fresh server. Every API call goes through the
generated functions and models, as an integrator's code would; only the PUT
to the signed URL, which is not an API path but an address the server hands
out, uses the client's own HTTP connection.

Environment: BUILDPEER_CONTRACT_BASE, BUILDPEER_CONTRACT_PASSWORD,
BUILDPEER_CONTRACT_PHOTO (the photo to upload). Writes copy.jpg (the
download) in the working directory. Exits non-zero, saying which step, on
the first thing that is not as the README says.
"""

import hashlib
import os
import sys
import time
import urllib.parse
import uuid

from buildpeer_client import AuthenticatedClient, Client
from buildpeer_client.api.auth import get_me, login, logout, refresh_tokens
from buildpeer_client.api.projects import (
    add_project_member,
    create_project,
    list_project_members,
    list_projects,
)
from buildpeer_client.api.uploads import (
    complete_upload,
    download_upload,
    get_upload,
    initiate_upload,
    list_uploads,
)
from buildpeer_client.api.users import create_user
from buildpeer_client.models import (
    CreateProjectRequest,
    CreateUserRequest,
    InitiateUploadRequest,
    LoginRequest,
    RefreshRequest,
    RoleDto,
    UploadStatusDto,
)

BASE = os.environ["BUILDPEER_CONTRACT_BASE"]
PASSWORD = os.environ["BUILDPEER_CONTRACT_PASSWORD"]
PHOTO = os.environ["BUILDPEER_CONTRACT_PHOTO"]


def step(name, response, *expected):
    """The parsed body of `response`, whose status must be one of `expected`."""
    if response.status_code not in expected:
        sys.exit(
            f"{name}: expected {expected}, got {int(response.status_code)}: "
            f"{response.content[:500]!r}"
        )
    print(f"{name}: {int(response.status_code)}", flush=True)
    return response.parsed


public = Client(base_url=BASE, raise_on_unexpected_status=True)

# Log in.
tokens = step(
    "login",
    login.sync_detailed(
        client=public,
        body=LoginRequest(tenant="demo", email="admin@demo.local", password=PASSWORD),
    ),
    200,
)
assert tokens.token_type == "Bearer", tokens
api = AuthenticatedClient(base_url=BASE, token=tokens.access_token, raise_on_unexpected_status=True)
me = step("me", get_me.sync_detailed(client=api), 200)
assert me.email == "admin@demo.local", me

# A project, with an Idempotency-Key: sent twice, created once.
key = f"project-{uuid.uuid4()}"
new_project = CreateProjectRequest(
    name="Torre Norte", code="TN-01", address="Av. Reforma 100, CDMX"
)
project = step(
    "create project",
    create_project.sync_detailed(client=api, body=new_project, idempotency_key=key),
    201,
)
again = step(
    "create project again",
    create_project.sync_detailed(client=api, body=new_project, idempotency_key=key),
    200,
    201,
)
assert again.id == project.id, (again, project)
projects = step("list projects", list_projects.sync_detailed(client=api, limit=10), 200)
assert [p.id for p in projects.items] == [project.id], projects

# A field employee, and their membership of the project.
juan = step(
    "create user",
    create_user.sync_detailed(
        client=api,
        body=CreateUserRequest(
            email="juan@demo.local",
            password="obra-segura-1",
            name="Juan Pérez",
            role=RoleDto.EMPLEADO,
        ),
    ),
    201,
)
step(
    "add member",
    add_project_member.sync_detailed(id=project.id, user_id=juan.id, client=api),
    201,
)
members = step(
    "list members",
    list_project_members.sync_detailed(id=project.id, client=api),
    200,
)
assert juan.id in [m.user_id for m in members.items], members

# Initiate, PUT the bytes to the signed URL, complete.
photo = open(PHOTO, "rb").read()
digest = hashlib.sha256(photo).hexdigest()
upload = step(
    "initiate",
    initiate_upload.sync_detailed(
        id=project.id,
        client=api,
        body=InitiateUploadRequest(
            filename="foto-obra.jpg",
            content_type="image/jpeg",
            size=len(photo),
            sha256=digest,
        ),
        idempotency_key=f"upload-{uuid.uuid4()}",
    ),
    201,
)
assert upload.status == UploadStatusDto.PENDING, upload
instructions = upload.upload
headers = dict(instructions.headers.additional_properties)
put = api.get_httpx_client().request(
    instructions.method, instructions.url, content=photo, headers=headers
)
if put.status_code // 100 != 2:
    sys.exit(f"PUT to the signed URL: {put.status_code} {put.text[:500]}")
print(f"PUT: {put.status_code}", flush=True)
done = step("complete", complete_upload.sync_detailed(id=upload.id, client=api), 200)
assert done.status in (UploadStatusDto.UPLOADED, UploadStatusDto.PROCESSING, UploadStatusDto.COMPLETED), done

# Poll until processing ends.
deadline = time.monotonic() + 60
while True:
    current = step("poll", get_upload.sync_detailed(id=upload.id, client=api), 200)
    if current.status in (UploadStatusDto.COMPLETED, UploadStatusDto.FAILED):
        break
    if time.monotonic() > deadline:
        sys.exit(f"poll: still {current.status} after 60 s")
    time.sleep(0.5)
assert current.status == UploadStatusDto.COMPLETED, current
assert current.sha256 == digest, current
assert current.detected_type == "image/jpeg", current
assert current.thumbnails, current

# List with filters: the completed JPEG is found, a filter that excludes it
# finds nothing.
found = step(
    "list uploads",
    list_uploads.sync_detailed(
        id=project.id, client=api, status=UploadStatusDto.COMPLETED, has_gps=True, limit=5
    ),
    200,
)
assert [u.id for u in found.items] == [upload.id], found
none = step(
    "list uploads (excluding)",
    list_uploads.sync_detailed(id=project.id, client=api, status=UploadStatusDto.FAILED),
    200,
)
assert none.items == [], none

# Download: the API redirects to a signed URL, which the client follows
# (with the API's headers: a signed URL needs none and ignores them).
download = download_upload.sync_detailed(id=upload.id, client=api)
if 300 <= download.status_code < 400:
    location = urllib.parse.urljoin(BASE, download.headers["location"])
    got = api.get_httpx_client().get(location)
    body = got.content
    print(f"download: {int(download.status_code)} → {got.status_code}", flush=True)
else:
    step("download", download, 200)
    body = download.content
if hashlib.sha256(body).hexdigest() != digest:
    sys.exit(f"download: {len(body)} bytes that are not the photo")
open("copy.jpg", "wb").write(body)

# Refresh, log out: the session is over.
pair = step(
    "refresh",
    refresh_tokens.sync_detailed(
        client=public, body=RefreshRequest(refresh_token=tokens.refresh_token)
    ),
    200,
)
step(
    "logout",
    logout.sync_detailed(client=public, body=RefreshRequest(refresh_token=pair.refresh_token)),
    204,
)
ended = AuthenticatedClient(base_url=BASE, token=pair.access_token)
step("me after logout", get_me.sync_detailed(client=ended), 401)
print("walkthrough: ok")
