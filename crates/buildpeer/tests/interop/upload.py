"""Uploads one file to a tus endpoint with tuspy, for tests/it/tus_interop.rs.

python3 upload.py ENDPOINT TOKEN FILE PROJECT_ID CHUNK_SIZE STOP_AFTER [RESUME_URL]
  STOP_AFTER: 0 uploads everything; N > 0 stops once at least N bytes are
  acknowledged (an interrupted upload). RESUME_URL continues that upload.
Prints `URL <upload url>` as soon as it is known, then `DONE` or `STOPPED <offset>`.
"""

import os
import sys

from tusclient import client


def main() -> int:
    endpoint, token, path, project, chunk, stop_after = sys.argv[1:7]
    resume = sys.argv[7] if len(sys.argv) > 7 else None
    stop = int(stop_after)
    tus = client.TusClient(endpoint, headers={"Authorization": f"Bearer {token}"})
    uploader = tus.uploader(
        path,
        chunk_size=int(chunk),
        url=resume,
        metadata={
            "project_id": project,
            "filename": os.path.basename(path),
            "filetype": "image/jpeg",
        },
        retries=5,
        retry_delay=1,
    )
    if not uploader.url:
        uploader.set_url(uploader.create_url())
    print(f"URL {uploader.url}", flush=True)
    size = uploader.get_file_size()
    while uploader.offset < size:
        uploader.upload_chunk()
        if 0 < stop <= uploader.offset < size:
            print(f"STOPPED {uploader.offset}", flush=True)
            return 0
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
