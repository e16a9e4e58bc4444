// Uploads many files at once to a tus endpoint with tus-js-client (the real
// browser client, here under Node) with its default retry delays, for
// tests/it/replica_crash.rs.
//
// node upload_many.mjs ENDPOINT TOKEN PROJECT_ID CHUNK_SIZE FILE...
//
// Every file is its own tus upload, all started at once. Only the options a
// browser application sets are set: no `retryDelays` (the default,
// [0, 1000, 3000, 5000]), no fingerprint store, a chunk size. What it
// prints on stdout, one line each, `<file>` being the file's name:
//   URL <file> <upload url>     as soon as the upload's URL is known, and
//                               again if tus-js-client starts the file over
//                               as a new upload (it does when the HEAD that
//                               resumes an upload answers neither 2xx nor 423)
//   PROGRESS <bytes>            after every acknowledged chunk: the bytes the
//                               server acknowledged, summed over every file
//   RETRY <status> <body>       every time tus-js-client decides whether to
//                               retry a failed request: the response's status
//                               (0: no response, a connection error) and its
//                               body's first 80 characters on one line
//   ANSWER <status> <method> <content-type> <body>
//                               every answer that is not a 2xx, retried or
//                               not (`-` for no content type; body as above)
//   DONE <file>                 an upload finished
//   ERROR <file> <error>        an upload failed for good
// Details of each retry (file, attempt, request, decision) go to stderr.
// Exits 0 once every upload finished, 1 once every upload ended and one failed.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { basename } from "node:path";

const require = createRequire(process.env.TUS_JS_CLIENT_DIR + "/");
const tus = require("tus-js-client");

const [endpoint, token, project, chunk, ...files] = process.argv.slice(2);
if (!endpoint || !token || !project || !chunk || files.length === 0) {
  console.error("usage: node upload_many.mjs ENDPOINT TOKEN PROJECT_ID CHUNK_SIZE FILE...");
  process.exit(2);
}

// tus-js-client 4.3.1's own decision (`defaultOnShouldRetry` in
// lib/upload.js), which it takes only when retry attempts are left and the
// error came from a request: retry unless the status is a 4xx other than
// 409 and 423 (a response-less error counts as status 0), and only when the
// browser does not say it is offline (Node has no such flag).
function inStatusCategory(status, category) {
  return status >= category && status < category + 100;
}
function isOnline() {
  return !(typeof navigator !== "undefined" && navigator.onLine === false);
}
function defaultDecision(status) {
  return (!inStatusCategory(status, 400) || status === 409 || status === 423) && isOnline();
}

const oneLine = (s) => String(s).replace(/\s+/g, " ").trim();
const accepted = new Map();
let total = 0;
let pending = files.length;
let failed = false;

function ended() {
  pending -= 1;
  if (pending === 0) {
    process.exit(failed ? 1 : 0);
  }
}

for (const file of files) {
  const name = basename(file);
  const data = readFileSync(file);
  accepted.set(name, 0);
  let printed = null;
  const upload = new tus.Upload(data, {
    endpoint,
    chunkSize: Number(chunk),
    headers: { Authorization: `Bearer ${token}` },
    metadata: { project_id: project, filename: name, filetype: "image/jpeg" },
    // No fingerprint store: each run uploads afresh.
    storeFingerprintForResuming: false,
    onUploadUrlAvailable() {
      if (printed !== upload.url) {
        printed = upload.url;
        console.log(`URL ${name} ${upload.url}`);
      }
    },
    onAfterResponse(req, res) {
      const status = res.getStatus();
      if (!inStatusCategory(status, 200)) {
        const type = oneLine(res.getHeader("content-type") || "-") || "-";
        const body = oneLine(res.getBody() || "").slice(0, 80);
        console.log(`ANSWER ${status} ${req.getMethod()} ${type} ${body}`);
      }
    },
    onChunkComplete(_size, bytesAccepted) {
      total += bytesAccepted - accepted.get(name);
      accepted.set(name, bytesAccepted);
      console.log(`PROGRESS ${total}`);
    },
    onShouldRetry(err, retryAttempt, _options) {
      const res = err.originalResponse;
      const status = res ? res.getStatus() : 0;
      const body = res ? oneLine(res.getBody() || "").slice(0, 80) : "";
      const retry = defaultDecision(status);
      console.log(`RETRY ${status} ${body}`);
      const req = err.originalRequest;
      const what = req ? `${req.getMethod()} ${req.getURL()}` : "?";
      const cause = oneLine(err.causingError || "");
      console.error(
        `retry ${name} attempt=${retryAttempt} ${what} status=${status} retry=${retry} cause=${cause}`,
      );
      return retry;
    },
    onError(err) {
      failed = true;
      console.log(`ERROR ${name} ${oneLine(err)}`);
      ended();
    },
    onSuccess() {
      console.log(`DONE ${name}`);
      ended();
    },
  });
  upload.start();
}
