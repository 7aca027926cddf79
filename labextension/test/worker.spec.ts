import { ChunkBuilder, ILineChunk, chunkLine, isChunk } from '../src/chunks';
import { IEntry } from '../src/contract';
import { LogModel, linesOf } from '../src/logmodel';
import { IWorkerScope, workerMain, workerSource } from '../src/worker';

const TS = '2026-01-01T00:00:00Z';
function log(seq: number, text: string, step = 0, stream: 'stdout' | 'stderr' = 'stdout'): IEntry {
  return { seq, ts: TS, kind: 'log', stream, step, text };
}
function event(seq: number, type: IEntry['type'], data: object): IEntry {
  return { seq, ts: TS, kind: 'event', type, data };
}

class FakeWebSocket {
  static last: FakeWebSocket;
  onopen: ((e: any) => void) | null = null;
  onclose: ((e: any) => void) | null = null;
  onerror: ((e: any) => void) | null = null;
  onmessage: ((e: any) => void) | null = null;
  closedWith: number | null = null;
  constructor(readonly url: string) {
    FakeWebSocket.last = this;
  }
  send(entries: IEntry[]): void {
    this.onmessage?.({ data: JSON.stringify(entries) });
  }
  close(code = 1000): void {
    this.closedWith = code;
  }
}

/** A worker scope with a clock the test moves. */
class FakeScope implements IWorkerScope {
  onmessage: ((event: { data: any }) => void) | null = null;
  posted: { message: any; transfer: Transferable[] }[] = [];
  timers: { fn: () => void; at: number }[] = [];
  WebSocket = FakeWebSocket as any;
  postMessage(message: any, transfer: Transferable[] = []): void {
    this.posted.push({ message, transfer });
  }
  setTimeout(fn: () => void, ms: number): any {
    const timer = { fn, at: now + ms };
    this.timers.push(timer);
    return timer;
  }
  clearTimeout(handle: any): void {
    this.timers = this.timers.filter(t => t !== handle);
  }
  /** Move the clock by ``ms``, firing the timers due. */
  advance(ms: number): void {
    now += ms;
    for (const timer of this.timers.filter(t => t.at <= now)) {
      this.clearTimeout(timer);
      timer.fn();
    }
  }
  batches(): any[][] {
    return this.posted.filter(p => p.message.type === 'entries').map(p => p.message.entries);
  }
}

let now = 1_000_000;
beforeEach(() => {
  jest.spyOn(Date, 'now').mockImplementation(() => now);
});
afterEach(() => jest.restoreAllMocks());

function start(interval = 100): { scope: FakeScope; socket: FakeWebSocket } {
  const scope = new FakeScope();
  workerMain(scope, ChunkBuilder, {
    interval,
    maxLines: 20_000,
    maxChars: 2_000_000,
    logKind: 'log',
    stderr: 'stderr'
  });
  scope.onmessage!({ data: { type: 'open', url: 'ws://x/stream?after=0' } });
  return { scope, socket: FakeWebSocket.last };
}

describe('the stream worker', () => {
  it('posts the first batch at once, then at most every interval, everything coalesced', () => {
    const { scope, socket } = start();
    socket.onopen!({});
    socket.send([log(1, 'a')]);
    expect(scope.batches()).toHaveLength(1); // nothing to wait for: shown at once
    for (let seq = 2; seq <= 31; seq += 3) {
      socket.send([log(seq, `l${seq}`), log(seq + 1, `l${seq + 1}`), log(seq + 2, `l${seq + 2}`)]);
      scope.advance(5);
    }
    expect(scope.batches()).toHaveLength(1); // ten messages within 100 ms: held
    scope.advance(60);
    const batches = scope.batches();
    expect(batches).toHaveLength(2);
    // one chunk for the 30 lines, its arrays transferred (not copied)
    const [chunk] = batches[1] as ILineChunk[];
    expect(isChunk(chunk)).toBe(true);
    expect(Array.from(chunk.seqs)).toEqual(Array.from({ length: 30 }, (_, i) => i + 2));
    expect(chunkLine(chunk, 29)).toBe('l31');
    expect(scope.posted[scope.posted.length - 1].transfer).toEqual([
      chunk.seqs.buffer,
      chunk.stderr.buffer,
      chunk.ends.buffer
    ]);
  });

  it('keeps events in order between the lines, one chunk per run of a step', () => {
    const { scope, socket } = start();
    socket.send([event(1, 'status', { status: 'running' })]);
    socket.send([
      event(2, 'step_started', { step: 0, name: 'a' }),
      log(3, 'x', 0),
      log(4, 'y', 0, 'stderr'),
      event(5, 'step_finished', { step: 0, exit_code: 0 }),
      log(6, 'z', 1),
      { seq: 7, ts: TS, kind: 'log', text: 'no step' }
    ]);
    scope.advance(100);
    const items = scope.batches()[1];
    expect(items.map((i: any) => (isChunk(i) ? `chunk ${i.step}:${i.seqs.length}` : i.type))).toEqual([
      'step_started',
      'chunk 0:2',
      'step_finished',
      'chunk 1:1',
      'chunk -1:1'
    ]);
    expect(Array.from((items[1] as ILineChunk).stderr)).toEqual([0, 1]);
  });

  it('posts what came before the close, then the close', () => {
    const { scope, socket } = start();
    socket.send([log(1, 'a')]);
    socket.send([log(2, 'b')]);
    socket.onclose!({ code: 1000 });
    expect(scope.posted.map(p => p.message.type)).toEqual(['entries', 'entries', 'close']);
    expect(scope.timers).toHaveLength(0);
  });

  it('closes a socket that sends something other than JSON', () => {
    const { socket } = start();
    socket.onmessage!({ data: 'not json' });
    expect(socket.closedWith).toBe(4000);
  });

  it('runs from its own source text, with nothing from the bundle', () => {
    const scope = new FakeScope();
    new Function('self', workerSource())(scope);
    scope.onmessage!({ data: { type: 'open', url: 'ws://x/' } });
    FakeWebSocket.last.send([log(1, 'hello')]);
    expect(chunkLine(scope.batches()[0][0], 0)).toBe('hello');
  });
});

/** What the worker would post for ``entries`` (one batch). */
function packed(entries: IEntry[]): (IEntry | ILineChunk)[] {
  const { scope, socket } = start();
  socket.send(entries);
  return scope.batches()[0];
}

describe('the log model over chunks', () => {
  it('shows chunks exactly as the same entries, duplicates and gaps counted alike', () => {
    const entries = [
      event(1, 'step_started', { step: 0, name: 'build' }),
      ...Array.from({ length: 50 }, (_, i) => log(i + 2, `line ${i}`, 0, i % 7 ? 'stdout' : 'stderr'))
    ];
    const plain = new LogModel();
    plain.add(entries);
    const chunked = new LogModel();
    chunked.add(packed(entries.slice(0, 30)));
    // a resent head (a reconnect) and a gap: the same bookkeeping as for entries
    chunked.add(packed([...entries.slice(25, 40), ...entries.slice(41)]));
    plain.add(entries.slice(25, 30));
    expect(chunked.duplicates).toBe(5);
    expect(chunked.gaps).toBe(1);
    expect(linesOf(chunked.groups[0])).toEqual(linesOf(plain.groups[0]).filter(l => l.seq !== 41));
    expect(chunked.rowCount).toBe(1 + 49);
    expect(chunked.rowAt(49)).toMatchObject({ kind: 'line', line: { text: 'line 49' } });
    expect(chunked.rowOfSeq(30)).toBe(29);
  });

  it('merges small chunks, so a slow build does not cost a chunk per line', () => {
    const model = new LogModel();
    for (let seq = 1; seq <= 1000; seq++) {
      model.add(packed([log(seq, `l${seq}`)]));
    }
    expect(model.groups[0].kept.length).toBeLessThanOrEqual(2);
    expect(model.groups[0].lineCount).toBe(1000);
    expect(model.rowAt(1000)).toMatchObject({ line: { seq: 1000, text: 'l1000' } });
  });

  it('keeps its rows laid out as lines come, as a full layout would', () => {
    const model = new LogModel();
    model.add([event(1, 'step_started', { step: 0 }), log(2, 'a', 0), event(3, 'step_started', { step: 1 })]);
    expect(model.rowCount).toBe(3);
    // lines into an earlier (open) step shift the rows after it
    model.add(packed([log(4, 'b', 0), log(5, 'c', 1), log(6, 'd', 1)]));
    const incremental = [model.rowCount, model.rowAt(3), model.rowAt(5)];
    model.invalidate();
    expect([model.rowCount, model.rowAt(3), model.rowAt(5)]).toEqual(incremental);
    expect(model.rowAt(3)).toMatchObject({ kind: 'header', group: { step: 1 } });
  });

  it('drops the oldest lines a chunk at a time, without copying', () => {
    const model = new LogModel({ maxLines: 1000 });
    let seq = 0;
    for (let batch = 0; batch < 20; batch++) {
      model.add(packed(Array.from({ length: 600 }, () => log(++seq, `l${seq}`))));
    }
    expect(model.totalLines).toBe(12_000);
    expect(model.keptLines).toBeLessThanOrEqual(1000);
    expect(model.groups[0].kept.length).toBeLessThanOrEqual(3);
    const kept = linesOf(model.groups[0]);
    expect(kept[0].seq).toBe(12_000 - model.keptLines + 1);
    expect(kept[kept.length - 1].text).toBe('l12000');
    expect(model.rowAt(0)).toEqual({ kind: 'dropped', count: model.droppedLines });
  });

  it('searches only the new lines when asked again, and forgets dropped ones', () => {
    const model = new LogModel({ maxLines: 100 });
    model.add(packed([log(1, 'error one'), log(2, 'fine'), log(3, '\x1b[31mERR\x1b[0mOR three')]));
    expect(model.search('Error')).toEqual([1, 3]);
    model.add(packed([log(4, 'ok'), log(5, 'an error, another error')]));
    expect(model.search('error')).toEqual([1, 3, 5]);
    // a match across two lines' joined text is not a match
    model.add(packed([log(6, 'xx err'), log(7, 'or yy')]));
    expect(model.search('error')).toEqual([1, 3, 5]);
    model.add(packed(Array.from({ length: 120 }, (_, i) => log(8 + i, i === 119 ? 'last error' : '-'))));
    expect(model.search('error')).toEqual([127]);
  });
});
