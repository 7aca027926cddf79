import { IListOptions } from '../src/api';
import { BuildsModel } from '../src/buildsmodel';
import { ACTIVE_STATUSES, IBuild } from '../src/contract';

function build(id: number, status = 'succeeded', preview: IBuild['preview'] = null): IBuild {
  return {
    id: `b${id}`,
    name: `build ${id}`,
    owner: 'me',
    status: status as IBuild['status'],
    provider: 'local',
    sandbox_id: null,
    created_at: '2026-01-01T00:00:00Z',
    started_at: null,
    finished_at: null,
    exit_code: null,
    error: null,
    spec: {},
    last_seq: 0,
    preview,
    artifacts: null
  };
}

/** The API's list, over a fixed set of builds (newest first), paged by ``before``. */
class FakeApi {
  builds: IBuild[] = [];
  calls: IListOptions[] = [];
  fail: Error | null = null;
  /** when set, each answer waits for this promise (to answer out of order) */
  hold: Promise<void> | null = null;
  async get(id: string) {
    const build = this.builds.find(b => b.id === id);
    if (!build) {
      throw new Error('not found');
    }
    return build;
  }
  async list(options: IListOptions) {
    this.calls.push(options);
    const hold = this.hold;
    if (hold) {
      await hold;
    }
    if (this.fail) {
      throw this.fail;
    }
    const statuses = options.status ? options.status.split(',') : null;
    const q = (options.q ?? '').toLowerCase();
    const matching = this.builds
      .map((b, i) => ({ b, pk: this.builds.length - i }))
      .filter(
        ({ b, pk }) =>
          (!statuses || statuses.includes(b.status)) &&
          (!q || (b.name ?? '').toLowerCase().includes(q) || b.id.includes(q)) &&
          (!options.before || pk < options.before)
      );
    const limit = options.limit ?? 50;
    const page = matching.slice(0, limit);
    return {
      builds: page.map(x => x.b),
      next: matching.length > limit ? page[page.length - 1].pk : null
    };
  }
}

/** The list requests of the panel's own filters (not those counting active builds). */
function panelCalls(api: FakeApi): IListOptions[] {
  return api.calls.filter(c => !(c.status === ACTIVE_STATUSES.join(',') && c.limit === 500 && !c.q));
}

function model(api: FakeApi): BuildsModel {
  const m = new BuildsModel(api as any, 3600);
  m.poll.stop();
  return m;
}

describe('the builds list', () => {
  it('pages backwards through the cursor, without duplicates', async () => {
    const api = new FakeApi();
    for (let i = 120; i >= 1; i--) {
      api.builds.push(build(i));
    }
    const m = model(api);
    await m.refresh();
    expect(m.builds).toHaveLength(50);
    expect(m.next).toBe(71);
    await m.more();
    expect(m.builds).toHaveLength(100);
    expect(api.calls[api.calls.length - 1].before).toBe(71);
    await m.more();
    expect(m.builds).toHaveLength(120);
    expect(m.next).toBeNull();
    expect(new Set(m.builds.map(b => b.id)).size).toBe(120);
    // a refresh reloads what is loaded, in one request
    await m.refresh();
    expect(api.calls[api.calls.length - 1].limit).toBe(150);
    expect(m.builds).toHaveLength(120);
    m.dispose();
  });

  it('filters by status on the server', async () => {
    const api = new FakeApi();
    api.builds = [build(3, 'running'), build(2, 'failed'), build(1, 'succeeded')];
    const m = model(api);
    m.setStatus('failed');
    await m.refresh();
    expect(panelCalls(api).pop()!.status).toBe('failed');
    expect(m.builds.map(b => b.id)).toEqual(['b2']);
    m.dispose();
  });

  it('searches by name on the server, through every page, with the status filter', async () => {
    const api = new FakeApi();
    for (let i = 120; i >= 1; i--) {
      api.builds.push(build(i, i % 2 ? 'failed' : 'succeeded'));
    }
    const m = model(api);
    m.setSearch('  BUILD 1  '); // trimmed; the case is the server's to ignore
    await m.refresh();
    expect(panelCalls(api).pop()!.q).toBe('BUILD 1');
    // build 1, 10-19, 100-120: found beyond the first page a client-side filter would see
    expect(m.builds.map(b => b.id)).toContain('b1');
    expect(m.builds).toHaveLength(32);
    m.setStatus('failed');
    await m.refresh();
    expect(panelCalls(api).pop()).toMatchObject({ q: 'BUILD 1', status: 'failed' });
    expect(m.builds.every(b => b.status === 'failed' && b.name!.startsWith('build 1'))).toBe(true);
    m.setSearch('');
    m.setStatus('');
    await m.refresh();
    expect(api.calls[api.calls.length - 1].q).toBe('');
    expect(m.builds).toHaveLength(50);
    m.dispose();
  });

  it('still counts and reports the builds a search hides', async () => {
    const api = new FakeApi();
    api.builds = [build(3, 'running'), build(2, 'running'), build(1, 'succeeded')];
    api.builds[0].name = 'docs';
    const m = model(api);
    const seen: string[] = [];
    m.transition.connect((_, t) => seen.push(`${t.build.id}:${t.kind}`));
    m.setSearch('docs');
    await m.refresh();
    expect(m.builds.map(b => b.id)).toEqual(['b3']);
    expect(m.running).toBe(2); // b2 runs too, hidden by the search
    api.builds = [build(3, 'running'), build(2, 'failed'), build(1, 'succeeded')];
    api.builds[0].name = 'docs';
    await m.refresh();
    expect(seen).toEqual(['b2:finished']);
    expect(m.running).toBe(1);
    m.dispose();
  });

  it('drops an answer for a search the user has typed past', async () => {
    const api = new FakeApi();
    api.builds = [build(2), build(1)];
    const m = model(api);
    let release = () => undefined as void;
    api.hold = new Promise<void>(resolve => (release = resolve));
    m.setSearch('build');
    const stale = m.refresh(); // asks for "build", answered late
    api.hold = null;
    m.setSearch('build 1');
    await m.refresh();
    expect(m.builds.map(b => b.id)).toEqual(['b1']);
    release();
    await stale;
    expect(m.builds.map(b => b.id)).toEqual(['b1']); // not overwritten by the late answer
    m.dispose();
  });

  it('loads the filters changed while a refresh was out, once it ends', async () => {
    // The poll drops a refresh asked for while one is out (its phase is "refreshed"):
    // clearing the search during a search's refresh must still list every build.
    const api = new FakeApi();
    api.builds = [build(2), build(1)];
    const m = model(api);
    m.setSearch('build 1');
    await m.refresh();
    expect(m.builds.map(b => b.id)).toEqual(['b1']);
    let release = () => undefined as void;
    api.hold = new Promise<void>(resolve => (release = resolve));
    const out = m.refresh(); // still "build 1", answered late
    m.setSearch(''); // its own refresh is the one the poll drops
    api.hold = null;
    release();
    await out;
    expect(panelCalls(api).pop()!.q).toBe('');
    expect(m.builds.map(b => b.id)).toEqual(['b2', 'b1']);
    m.dispose();
  });

  it('reports builds that finish and previews that become ready, once', async () => {
    const api = new FakeApi();
    api.builds = [build(2, 'running'), build(1, 'succeeded')];
    const m = model(api);
    const seen: string[] = [];
    m.transition.connect((_, t) => seen.push(`${t.build.id}:${t.kind}`));
    await m.refresh();
    expect(seen).toEqual([]); // what was already there on the first load is not news
    expect(m.running).toBe(1);
    api.builds = [build(3, 'failed'), build(2, 'succeeded', { state: 'ready', url: 'http://x/' }), build(1)];
    await m.refresh();
    expect(seen).toEqual(['b3:finished', 'b2:finished', 'b2:preview_ready']);
    await m.refresh();
    expect(seen).toHaveLength(3);
    expect(m.running).toBe(0);
    m.dispose();
  });

  it('shows an error and rethrows it, so the poll backs off', async () => {
    const api = new FakeApi();
    api.fail = new Error('The jupyter_agentbuild server extension is not running');
    const m = model(api);
    await expect(m.refresh()).rejects.toThrow('not running');
    expect(m.error).toContain('not running');
    m.dispose();
  });
});
