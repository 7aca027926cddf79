/**
 * The stream's WebSocket in a Web Worker: receiving and parsing a flood of entries (a
 * build printing a million lines sends tens of megabytes of JSON) happens off the page's
 * main thread, so Lab stays responsive; the page gets each batch as compact tuples
 * (``[seq, step, 0|1 for stdout|stderr, text]`` for log lines, events as they are).
 *
 * The worker is made from a Blob of the code below (self-contained: no imports), so it
 * needs nothing from the extension's bundle or its public path.
 */
import { ISocket } from './stream';

const WORKER_SOURCE = `
const SLICE = 2000;
let socket = null;
onmessage = event => {
  const message = event.data;
  if (message.type === 'open') {
    socket = new WebSocket(message.url);
    socket.onopen = () => postMessage({ type: 'open' });
    socket.onclose = e => postMessage({ type: 'close', code: e.code });
    socket.onerror = () => postMessage({ type: 'error' });
    socket.onmessage = e => {
      let entries;
      try {
        entries = JSON.parse(e.data);
      } catch (error) {
        socket.close(4000);
        return;
      }
      // in slices: each is one short task on the page's side, so a keypress never waits
      // behind a whole frame of thousands of lines
      for (let start = 0; start < entries.length; start += SLICE) {
        const slice = entries.slice(start, start + SLICE);
        const out = new Array(slice.length);
        for (let i = 0; i < slice.length; i++) {
          const entry = slice[i];
          out[i] = entry.kind === 'log'
            ? [entry.seq, entry.step === undefined ? -1 : entry.step, entry.stream === 'stderr' ? 1 : 0, entry.text || '']
            : entry;
        }
        postMessage({ type: 'entries', entries: out });
      }
    };
  } else if (message.type === 'close' && socket) {
    socket.close();
  }
};
`;

let workerUrl: string | null = null;

/** Whether the stream can run in a worker here (a browser with the native WebSocket). */
export function workerAvailable(socketClass: typeof WebSocket): boolean {
  return (
    typeof Worker !== 'undefined' &&
    typeof Blob !== 'undefined' &&
    typeof URL !== 'undefined' &&
    typeof URL.createObjectURL === 'function' &&
    typeof window !== 'undefined' &&
    socketClass === window.WebSocket
  );
}

/** A WebSocket to ``url``, run in a worker of its own; closed when the socket is. */
export class WorkerSocket implements ISocket {
  constructor(url: string) {
    if (workerUrl === null) {
      workerUrl = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: 'text/javascript' }));
    }
    this.worker = new Worker(workerUrl);
    this.worker.onmessage = event => this.receive(event.data);
    this.worker.onerror = () => this.receive({ type: 'close', code: 1006 });
    this.worker.postMessage({ type: 'open', url });
  }

  onopen: ((event: any) => void) | null = null;
  onmessage: ((event: { data: any }) => void) | null = null;
  onclose: ((event: { code: number }) => void) | null = null;
  onerror: ((event: any) => void) | null = null;
  private readonly worker: Worker;
  private closed = false;

  private receive(message: any): void {
    if (this.closed && message.type !== 'close') {
      return;
    }
    switch (message.type) {
      case 'open':
        this.onopen?.({});
        break;
      case 'entries':
        this.onmessage?.({ data: message.entries });
        break;
      case 'error':
        this.onerror?.({});
        break;
      case 'close':
        if (!this.closed) {
          this.closed = true;
          this.worker.terminate();
          this.onclose?.({ code: message.code });
        }
        break;
    }
  }

  close(): void {
    if (!this.closed) {
      this.closed = true;
      this.worker.terminate(); // its socket goes with it
    }
  }
}
