// Uploads one file to a tus endpoint with tus-js-client (the real browser
// client, here under Node), for tests/it/tus_interop.rs.
//
// node upload.mjs ENDPOINT TOKEN FILE PROJECT_ID CHUNK_SIZE STOP_AFTER [RESUME_URL]
//   STOP_AFTER: 0 uploads everything; N > 0 aborts once at least N bytes are
//   acknowledged (an interrupted upload). RESUME_URL continues that upload.
// Prints `URL <upload url>` as soon as it is known, then `DONE` or `STOPPED <offset>`.
// TUS_PARALLEL=N uploads the file as N partial uploads and a final one
// (the concatenation extension); the partials carry the metadata too, since
// the server needs project_id on every upload.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { basename } from "node:path";

const require = createRequire(process.env.TUS_JS_CLIENT_DIR + "/");
const tus = require("tus-js-client");

const [endpoint, token, file, project, chunk, stopAfter, resumeUrl] = process.argv.slice(2);
const data = readFileSync(file);
const stop = Number(stopAfter);
const parallel = Number(process.env.TUS_PARALLEL || "1");
const metadata = { project_id: project, filename: basename(file), filetype: "image/jpeg" };
let printed = false;

const upload = new tus.Upload(data, {
  endpoint,
  uploadUrl: resumeUrl || null,
  chunkSize: Number(chunk),
  headers: { Authorization: `Bearer ${token}` },
  metadata,
  ...(parallel > 1 ? { parallelUploads: parallel, metadataForPartialUploads: metadata } : {}),
  // No fingerprint store: resumption is driven by the URL the test passes.
  storeFingerprintForResuming: false,
  retryDelays: [100, 500, 1000, 1000, 2000],
  onUploadUrlAvailable() {
    if (!printed) {
      printed = true;
      console.log(`URL ${upload.url}`);
    }
  },
  onChunkComplete(_size, accepted) {
    if (stop > 0 && accepted >= stop && accepted < data.length) {
      upload.abort(false).then(() => {
        console.log(`STOPPED ${accepted}`);
        process.exit(0);
      });
    }
  },
  onError(err) {
    console.error(`ERROR ${err}`);
    process.exit(1);
  },
  onSuccess() {
    // With parallelUploads the final upload's URL is only known here.
    if (!printed) {
      console.log(`URL ${upload.url}`);
    }
    console.log("DONE");
    process.exit(0);
  },
});
upload.start();
