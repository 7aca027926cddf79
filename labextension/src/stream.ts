/**
 * Follows a build's stream and keeps following it: any drop (a server restart, a proxy
 * timeout, a network blip) reconnects with ``after=<last seq seen>`` after a backoff, so the
 * log model gets every entry exactly once (it ignores duplicates by seq and counts gaps).
 * The stream ends only after the entry carrying the terminal status.
 *
 * The socket and the timer are injected, so the bookkeeping is unit-tested without a server.
 */
import { LogModel } from './logmodel';
import { IEntry } from './contract';

/** What the stream needs of a WebSocket. */
export interface ISocket {
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onclose: ((event: { code: number }) => void) | null;
  onerror: ((event: any) => void) | null;
  close(code?: number): void;
}

export type StreamState = 'connecting' | 'open' | 'waiting' | 'done' | 'disposed';

export interface IStreamOptions {
  model: LogModel;
  /** the socket for ``after`` (the URL, token and WebSocket class are the caller's) */
  connect: (after: number) => ISocket;
  /** called after each batch and state change (the view coalesces repaints) */
  onChange?: () => void;
  /** first retry delay and cap, in ms */
  backoff?: { initial: number; max: number };
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
}

export class LogStream {
  constructor(options: IStreamOptions) {
    this.options = options;
    this.model = options.model;
    this.backoff = options.backoff ?? { initial: 500, max: 10_000 };
  }

  readonly model: LogModel;
  state: StreamState = 'connecting';
  /** connections opened so far (1 + reconnects) */
  connections = 0;
  /** consecutive failed attempts (reset by any message) */
  failures = 0;
  /** the ``after`` of every connection, in order: what a test checks for no gap */
  readonly afters: number[] = [];
  private readonly options: IStreamOptions;
  private readonly backoff: { initial: number; max: number };
  private socket: ISocket | null = null;
  private timer: unknown = null;

  start(): void {
    if (this.state === 'disposed' || this.model.done) {
      this.setState(this.model.done ? 'done' : this.state);
      return;
    }
    const after = this.model.lastSeq;
    this.afters.push(after);
    this.connections++;
    this.setState('connecting');
    const socket = this.options.connect(after);
    this.socket = socket;
    socket.onopen = () => {
      if (this.socket === socket) {
        this.setState('open');
      }
    };
    socket.onmessage = event => {
      if (this.socket !== socket) {
        return;
      }
      this.failures = 0;
      // text from a WebSocket, or batches already parsed (by the worker socket)
      const data = event.data;
      this.model.add(typeof data === 'string' ? (JSON.parse(data) as IEntry[]) : data);
      this.options.onChange?.();
    };
    socket.onerror = () => undefined; // a close always follows
    socket.onclose = () => {
      if (this.socket !== socket) {
        return;
      }
      this.socket = null;
      if (this.model.done) {
        this.setState('done');
        return;
      }
      this.retry();
    };
  }

  /** The delay before the next attempt: doubling from ``initial`` up to ``max``. */
  nextDelay(): number {
    return Math.min(this.backoff.max, this.backoff.initial * 2 ** Math.min(this.failures, 20));
  }

  private retry(): void {
    const delay = this.nextDelay();
    this.failures++;
    this.setState('waiting');
    const set = this.options.setTimer ?? ((fn, ms) => setTimeout(fn, ms));
    this.timer = set(() => {
      this.timer = null;
      this.start();
    }, delay);
  }

  /** Reconnect now (e.g. the page became visible again) instead of after the backoff. */
  reconnectNow(): void {
    if (this.state === 'waiting') {
      this.cancelTimer();
      this.start();
    }
  }

  /** Stop following: the build ended and the server has nothing after ``lastSeq``. */
  finish(): void {
    this.cancelTimer();
    const socket = this.socket;
    this.socket = null;
    socket?.close();
    this.setState('done');
  }

  private cancelTimer(): void {
    if (this.timer !== null) {
      (this.options.clearTimer ?? (h => clearTimeout(h as any)))(this.timer);
      this.timer = null;
    }
  }

  private setState(state: StreamState): void {
    if (this.state !== state) {
      this.state = state;
      this.options.onChange?.();
    }
  }

  dispose(): void {
    this.cancelTimer();
    const socket = this.socket;
    this.socket = null;
    this.state = 'disposed';
    socket?.close();
  }
}
