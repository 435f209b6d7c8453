-- wrk script for benchmarks/ingress.py: POSTs one signed webhook body, each request with its own
-- X-GitHub-Delivery (run id, thread, count), and prints one RESULT line when done.
-- Arguments after `--`: run id, X-Hub-Signature-256 value, path of the body file.

local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function init(args)
  run_id, signature = args[1], args[2]
  local file = assert(io.open(args[3], "rb"))
  body = file:read("*a")
  file:close()
  sent = 0
end

function request()
  sent = sent + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["User-Agent"] = "GitHub-Hookshot/benchmark",
    ["X-GitHub-Event"] = "issues",
    ["X-Hub-Signature-256"] = signature,
    ["X-GitHub-Delivery"] = run_id .. "-" .. thread_number .. "-" .. sent,
  }
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
