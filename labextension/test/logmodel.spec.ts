import { parseAnsi, stripAnsi } from '../src/ansi';
import { IEntry } from '../src/contract';
import { LogModel, formatDuration, linesOf, windowRange } from '../src/logmodel';
import { ISocket, LogStream } from '../src/stream';

const TS = '2026-01-01T00:00:00Z';
let seq = 0;
function log(step: number, text: string, s = ++seq): IEntry {
  return { seq: s, ts: TS, kind: 'log', stream: 'stdout', step, text };
}
function event(type: IEntry['type'], data: object, s = ++seq): IEntry {
  return { seq: s, ts: TS, kind: 'event', type, data };
}
beforeEach(() => {
  seq = 0;
});

describe('grouping by step', () => {
  it('groups lines under their step with its name, duration and exit code', () => {
    const model = new LogModel();
    model.add([
      event('status', { status: 'running' }),
      event('step_started', { step: 0, name: 'install' }),
      log(0, 'a'),
      log(0, 'b'),
      event('step_finished', { step: 0, exit_code: 0, duration: 1.5 }),
      event('step_started', { step: 1, name: 'test' }),
      log(1, 'c')
    ]);
    expect(model.groups.map(g => g.name)).toEqual(['install', 'test']);
    expect(linesOf(model.groups[0]).map(l => l.text)).toEqual(['a', 'b']);
    expect(model.groups[0].duration).toBe(1.5);
    // a finished, successful step is closed; the running one is open
    expect(model.isOpen(model.groups[0])).toBe(false);
    expect(model.isOpen(model.groups[1])).toBe(true);
    expect(model.rowCount).toBe(1 + 1 + 1);
    expect(model.rowAt(0)).toMatchObject({ kind: 'header', group: { name: 'install' } });
    expect(model.rowAt(2)).toMatchObject({ kind: 'line', line: { text: 'c' } });
  });

  it('keeps a failed step open, and the user can toggle any step', () => {
    const model = new LogModel();
    model.add([
      event('step_started', { step: 0, name: 'build' }),
      log(0, 'oops'),
      event('step_finished', { step: 0, exit_code: 2, duration: 0.2 }),
      event('status', { status: 'failed', exit_code: 2 })
    ]);
    expect(model.done).toBe(true);
    expect(model.exitCode).toBe(2);
    expect(model.isOpen(model.groups[0])).toBe(true);
    model.toggle(0);
    expect(model.rowCount).toBe(1);
    // a line link opens its step
    expect(model.rowOfSeq(2)).toBe(1);
    expect(model.isOpen(model.groups[0])).toBe(true);
  });
});

describe('ANSI', () => {
  it('turns SGR codes into styled segments and drops other escapes', () => {
    const segments = parseAnsi('\x1b[1;31mred bold\x1b[0m plain \x1b[38;5;208mo\x1b[2K\x1b]0;t\x07k');
    expect(segments).toEqual([
      { text: 'red bold', bold: true, fg: 1 },
      { text: ' plain ' },
      { text: 'o', fg: 'rgb(255,135,0)' },
      { text: 'k', fg: 'rgb(255,135,0)' }
    ]);
    expect(parseAnsi('\x1b[48;2;1;2;3mx')).toEqual([{ text: 'x', bg: 'rgb(1,2,3)' }]);
    expect(parseAnsi('\x1b[92mhi\x1b[39m!')).toEqual([{ text: 'hi', fg: 10 }, { text: '!' }]);
    expect(stripAnsi('\x1b[32mok\x1b[0m')).toBe('ok');
  });

  it('search ignores escapes and case', () => {
    const model = new LogModel();
    model.add([log(0, '\x1b[31mERR\x1b[0mor here'), log(0, 'fine'), log(0, 'error again')]);
    expect(model.search('error')).toEqual([1, 3]);
  });
});

describe('the window of rendered lines', () => {
  it('renders only the visible rows plus the overscan', () => {
    expect(windowRange(1_000_000, 0, 600, 20, 10)).toEqual({ start: 0, end: 41 });
    const { start, end } = windowRange(1_000_000, 20 * 500_000, 600, 20, 10);
    expect(start).toBe(499_990);
    expect(end - start).toBe(51);
    expect(windowRange(100, 20 * 100, 600, 20, 10)).toEqual({ start: 90, end: 100 });
    expect(windowRange(0, 0, 600, 20)).toEqual({ start: 0, end: 0 });
  });

  it('finds any row of a million-line log without flattening it', () => {
    const model = new LogModel({ maxLines: 2_000_000 });
    const batch: IEntry[] = [];
    for (let i = 0; i < 1_000_000; i++) {
      batch.push(log(i < 500_000 ? 0 : 1, `line ${i}`));
    }
    model.add(batch);
    expect(model.rowCount).toBe(1_000_002);
    expect(model.rowAt(500_001)).toMatchObject({ kind: 'header', group: { step: 1 } });
    expect(model.rowAt(999_999)).toMatchObject({ kind: 'line', line: { text: 'line 999997' } });
  });

  it('keeps at most maxLines, dropping the oldest in bulk', () => {
    const model = new LogModel({ maxLines: 100 });
    const batch: IEntry[] = [];
    for (let i = 0; i < 250; i++) {
      batch.push(log(0, `l${i}`));
    }
    model.add(batch);
    expect(model.keptLines).toBeLessThanOrEqual(100);
    expect(model.totalLines).toBe(250);
    expect(model.rowAt(0)).toEqual({ kind: 'dropped', count: model.droppedLines });
    const kept = linesOf(model.groups[0]);
    expect(kept).toHaveLength(model.keptLines);
    expect(kept[kept.length - 1].text).toBe('l249');
    expect(kept[0].seq).toBe(model.droppedLines + 1);
    expect(model.rowOfSeq(1)).toBe(-1);
  });

  it('formats durations', () => {
    expect(formatDuration(1.234)).toBe('1.2s');
    expect(formatDuration(65)).toBe('1m 05s');
    expect(formatDuration(3725)).toBe('1h 02m');
    expect(formatDuration(null)).toBe('');
  });
});

class FakeSocket implements ISocket {
  onopen: ((event: any) => void) | null = null;
  onmessage: ((event: { data: any }) => void) | null = null;
  onclose: ((event: { code: number }) => void) | null = null;
  onerror: ((event: any) => void) | null = null;
  closed = false;
  constructor(readonly after: number) {}
  send(entries: IEntry[]): void {
    this.onmessage?.({ data: JSON.stringify(entries) });
  }
  drop(code = 1006): void {
    this.onclose?.({ code });
  }
  close(): void {
    this.closed = true;
  }
}

describe('reconnect bookkeeping', () => {
  function setup() {
    const model = new LogModel();
    const sockets: FakeSocket[] = [];
    const timers: { fn: () => void; ms: number }[] = [];
    const stream = new LogStream({
      model,
      connect: after => {
        const socket = new FakeSocket(after);
        sockets.push(socket);
        return socket;
      },
      backoff: { initial: 100, max: 1000 },
      setTimer: (fn, ms) => timers.push({ fn, ms }),
      clearTimer: () => undefined
    });
    return { model, sockets, timers, stream };
  }

  it('resumes after the last seq seen, with no gap and no duplicate', () => {
    const { model, sockets, timers, stream } = setup();
    stream.start();
    sockets[0].send([log(0, 'a', 1), log(0, 'b', 2), log(0, 'c', 3)]);
    sockets[0].drop();
    expect(stream.state).toBe('waiting');
    timers.shift()!.fn();
    expect(sockets[1].after).toBe(3);
    // a server resending what was seen costs nothing: keyed by seq
    sockets[1].send([log(0, 'c', 3), log(0, 'd', 4), event('status', { status: 'succeeded' }, 5)]);
    sockets[1].drop(1000);
    expect(stream.state).toBe('done');
    expect(linesOf(model.groups[0]).map(l => l.seq)).toEqual([1, 2, 3, 4]);
    expect(model.gaps).toBe(0);
    expect(model.duplicates).toBe(1);
    expect(stream.afters).toEqual([0, 3]);
    expect(timers).toHaveLength(0);
  });

  it('backs off while the server is away and resets once entries flow', () => {
    const { sockets, timers, stream } = setup();
    stream.start();
    for (let i = 0; i < 6; i++) {
      sockets[sockets.length - 1].drop();
      timers.shift()!.fn();
    }
    expect(stream.connections).toBe(7);
    sockets[sockets.length - 1].send([log(0, 'x', 1)]);
    expect(stream.failures).toBe(0);
    sockets[sockets.length - 1].drop();
    expect(timers[0].ms).toBe(100);
  });

  it('counts the delays: doubling up to the cap', () => {
    const { sockets, timers, stream } = setup();
    stream.start();
    const delays: number[] = [];
    for (let i = 0; i < 6; i++) {
      sockets[sockets.length - 1].drop();
      const timer = timers.shift()!;
      delays.push(timer.ms);
      timer.fn();
    }
    expect(delays).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  it('a clean close before the terminal status still reconnects; dispose stops it', () => {
    const { sockets, timers, stream } = setup();
    stream.start();
    sockets[0].send([log(0, 'a', 1)]);
    sockets[0].drop(1000);
    expect(timers).toHaveLength(1);
    stream.dispose();
    timers.shift()!.fn();
    expect(sockets).toHaveLength(1);
  });
});

describe('settling a stream the server will not end', () => {
  it('finish() stops reconnecting and says done', () => {
    const model = new LogModel();
    const sockets: FakeSocket[] = [];
    const timers: { fn: () => void; ms: number }[] = [];
    const stream = new LogStream({
      model,
      connect: after => {
        const socket = new FakeSocket(after);
        sockets.push(socket);
        return socket;
      },
      setTimer: (fn, ms) => timers.push({ fn, ms }),
      clearTimer: () => timers.splice(0)
    });
    stream.start();
    sockets[0].send([log(0, 'a', 1)]);
    sockets[0].drop();
    expect(timers).toHaveLength(1);
    stream.finish();
    expect(stream.state).toBe('done');
    expect(timers).toHaveLength(0);
    expect(sockets).toHaveLength(1);
  });
});

