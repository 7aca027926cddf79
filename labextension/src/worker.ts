/**
 * The stream's WebSocket in a Web Worker: receiving and parsing a flood of entries (a
 * build printing a million lines sends tens of megabytes of JSON) happens off the page's
 * main thread, so Lab stays responsive. The worker also packs the log lines into chunks
 * (chunks.ts) and posts what came at most every ``interval`` ms: the page then handles a
 * flood in ~10 small messages a second, each costing it O(chunks), not O(lines).
 *
 * The worker is made from a Blob of ``workerMain``'s and ``ChunkBuilder``'s source text
 * (both self-contained: no imports, nothing referenced outside their bodies), so it needs
 * nothing from the extension's bundle or its public path.
 */
import { ChunkBuilder } from './chunks';
import { EntryKind, Stream } from './contract';
import { ISocket } from './stream';

/** The worker posts what came at most this often (ms). */
export const POST_INTERVAL = 100;
/** A chunk holds at most this many lines, and about this many characters. */
export const CHUNK_LINES = 20_000;
export const CHUNK_CHARS = 2_000_000;

/** The worker's settings, and the contract's words it needs (it can import nothing). */
export interface IWorkerOptions {
  /** post at most this often (ms) */
  interval: number;
  maxLines: number;
  maxChars: number;
  logKind: string;
  stderr: string;
}

/** What the worker needs of its global scope (``self`` in a worker; a fake in tests). */
export interface IWorkerScope {
  onmessage: ((event: { data: any }) => void) | null;
  postMessage(message: any, transfer?: Transferable[]): void;
  WebSocket: new (url: string) => WebSocket;
  setTimeout(fn: () => void, ms: number): any;
  clearTimeout(handle: any): void;
}

/** The worker's code: a socket per ``open``; entries parsed, lines packed, batches posted
 * at most every ``interval`` ms (the first at once), everything before a ``close``.
 *
 * One function, longer than the others on purpose: its source text is the worker's code
 * (``workerSource``), so it cannot call any helper of this module; its parts are the
 * closures inside it. */
export function workerMain(
  scope: IWorkerScope,
  Builder: typeof ChunkBuilder,
  options: IWorkerOptions
): void {
  const { interval, maxLines, maxChars, logKind, stderr } = options;
  let socket: WebSocket | null = null;
  let builder = new Builder(maxLines, maxChars);
  let pending: any[] = [];
  let timer: any = null;
  let lastPost = -Infinity;
  const post = () => {
    if (timer !== null) {
      scope.clearTimeout(timer);
      timer = null;
    }
    const last = builder.take();
    if (last) {
      pending.push(last);
    }
    if (!pending.length) {
      return;
    }
    const entries = pending;
    pending = [];
    lastPost = Date.now();
    const transfer: Transferable[] = [];
    for (const item of entries) {
      if (item.seqs) {
        transfer.push(item.seqs.buffer, item.stderr.buffer, item.ends.buffer);
      }
    }
    scope.postMessage({ type: 'entries', entries }, transfer);
  };
  const schedule = () => {
    if (timer === null) {
      const wait = lastPost + interval - Date.now();
      if (wait <= 0) {
        post();
      } else {
        timer = scope.setTimeout(post, wait);
      }
    }
  };
  const receive = (data: string) => {
    let entries;
    try {
      entries = JSON.parse(data);
    } catch (error) {
      socket?.close(4000);
      return;
    }
    for (const entry of entries) {
      if (entry.kind === logKind) {
        const step = entry.step === undefined ? -1 : entry.step;
        const done = builder.push(entry.seq, step, entry.stream === stderr, entry.text || '');
        if (done) {
          pending.push(done);
        }
      } else {
        const done = builder.take(); // the event comes after the lines before it
        if (done) {
          pending.push(done);
        }
        pending.push(entry);
      }
    }
    schedule();
  };
  scope.onmessage = event => {
    const message = event.data;
    if (message.type === 'open') {
      builder = new Builder(maxLines, maxChars);
      const opened = new scope.WebSocket(message.url);
      socket = opened;
      opened.onopen = () => scope.postMessage({ type: 'open' });
      opened.onclose = e => {
        post(); // what came before the close first
        scope.postMessage({ type: 'close', code: e.code });
      };
      opened.onerror = () => scope.postMessage({ type: 'error' });
      opened.onmessage = e => receive(e.data);
    } else if (message.type === 'close' && socket) {
      socket.close();
    }
  };
}

/** The worker's source: ``workerMain`` run on the worker's ``self``. */
export function workerSource(): string {
  const options: IWorkerOptions = {
    interval: POST_INTERVAL,
    maxLines: CHUNK_LINES,
    maxChars: CHUNK_CHARS,
    logKind: EntryKind.log,
    stderr: Stream.stderr
  };
  return `(${workerMain.toString()})(self, ${ChunkBuilder.toString()}, ${JSON.stringify(options)});`;
}

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
      workerUrl = URL.createObjectURL(new Blob([workerSource()], { type: 'text/javascript' }));
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
