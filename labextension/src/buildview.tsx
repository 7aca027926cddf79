/**
 * A build's own main-area tab: a header (status, timings, provider, sandbox, exit code,
 * error, actions) above three tabs: the log (windowed, steps, search, line links), the
 * artifacts (a tree with sizes and downloads) and the preview (an iframe of
 * ``preview.url``, on an origin of its own).
 */
import { TranslationBundle } from '@jupyterlab/translation';
import { ReactWidget } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { Panel, TabPanel, Widget } from '@lumino/widgets';
import * as React from 'react';

import { AgentBuildApi, ApiError } from './api';
import { isActive } from './buildsmodel';
import { IArtifact, IBuild, PreviewState } from './contract';
import { LogModel } from './logmodel';
import { LogView } from './logview';
import { StatusBadge, buildDuration, formatSize, relativeTime } from './status';
import { LogStream } from './stream';

export interface IBuildViewOptions {
  id: string;
  api: AgentBuildApi;
  commands: CommandRegistry;
  trans: TranslationBundle;
  linesKept: number;
  lineUrl: (id: string, seq: number) => string;
  onLineLink?: (seq: number, url: string) => void;
  onBuild?: (build: IBuild) => void;
}

export class BuildView extends Panel {
  constructor(options: IBuildViewOptions) {
    super();
    this.options = options;
    this.buildId = options.id;
    const { api, trans } = options;
    this.id = `jp-agentbuild-view-${options.id}`;
    this.addClass('jp-AgentBuild-view');
    this.node.dataset.buildId = options.id;
    this.title.label = options.id;
    this.title.closable = true;
    this.model = new LogModel({ maxLines: options.linesKept });
    this.header = new Header(this);
    this.header.addClass('jp-AgentBuild-viewHeader');
    this.log = new LogView({
      model: this.model,
      trans,
      lineUrl: seq => options.lineUrl(options.id, seq),
      downloadUrl: api.url('builds', options.id, 'logs') + '?format=text',
      onLineLink: options.onLineLink
    });
    this.artifacts = new ArtifactsTab(this);
    this.preview = new PreviewTab(this);
    this.tabs.addClass('jp-AgentBuild-tabs');
    this.tabs.addWidget(this.log);
    this.tabs.addWidget(this.artifacts);
    this.tabs.addWidget(this.preview);
    this.addWidget(this.header);
    this.addWidget(this.tabs);
    this.stream = new LogStream({
      model: this.model,
      connect: after => api.openSocket(options.id, after),
      onChange: () => this.onStream()
    });
    this.stream.start();
    void this.fetch();
    this.clock = window.setInterval(() => this.renderHeader(), 1000);
    document.addEventListener('visibilitychange', this.onVisible);
  }

  readonly buildId: string;
  readonly model: LogModel;
  readonly log: LogView;
  readonly stream: LogStream;
  readonly tabs = new TabPanel();
  build: IBuild | null = null;
  error: string | null = null;
  readonly options: IBuildViewOptions;
  private readonly header: Header;
  private readonly artifacts: ArtifactsTab;
  private readonly preview: PreviewTab;
  private clock: number;
  private lastStatus: string | null = null;
  private lastState = '';
  private settledAt = 0;
  private bookkept = 0;
  private bookkeepTimer = 0;
  private lastEvents = 0;
  private fetching = false;
  private refetch = false;

  get trans(): TranslationBundle {
    return this.options.trans;
  }

  /** Re-read the Build (header, preview, artifacts). */
  async fetch(): Promise<void> {
    if (this.fetching) {
      this.refetch = true; // something changed during this read: read again after it
      return;
    }
    this.fetching = true;
    try {
      this.build = await this.options.api.get(this.buildId);
      this.error = null;
      this.title.label = this.build.name || this.build.id;
      this.title.caption = `${this.build.name ?? ''} ${this.build.id}`.trim();
      this.options.onBuild?.(this.build);
      if (!isActive(this.build)) {
        this.settle(this.build);
      }
    } catch (error) {
      this.error = (error as Error).message;
      if (error instanceof ApiError && error.status === 404) {
        this.stream.finish(); // deleted (or never ours): nothing will ever stream
      }
    } finally {
      this.fetching = false;
    }
    if (this.refetch && !this.isDisposed) {
      this.refetch = false;
      return this.fetch();
    }
    this.renderHeader();
    this.artifacts.update();
    this.preview.update();
  }

  private onStream(): void {
    this.log.refresh();
    // the stream's bookkeeping, for people debugging a stream (and for tests); written
    // at most every 250 ms during a flood, and at once when the stream's state changes
    const now = performance.now();
    if (this.stream.state !== this.node.dataset.stream || now - this.bookkept > 250) {
      this.bookkept = now;
      this.writeBookkeeping();
    } else if (!this.bookkeepTimer) {
      this.bookkeepTimer = window.setTimeout(() => {
        this.bookkeepTimer = 0;
        this.bookkept = performance.now();
        this.writeBookkeeping();
      }, 250);
    }
    const trans = this.trans;
    const state = this.stream.state;
    this.log.setStreamState(
      state === 'waiting'
        ? trans.__('Reconnecting…')
        : state === 'connecting' && this.stream.connections > 1
          ? trans.__('Reconnecting…')
          : ''
    );
    // a new status or event (preview, artifacts) changes the Build: re-read it; and once
    // more when the stream ends (the server closes it only after the terminal row is
    // written, which can come just after the terminal entry)
    if (
      this.model.status !== this.lastStatus ||
      this.model.events.length !== this.lastEvents ||
      state !== this.lastState
    ) {
      this.lastState = state;
      this.lastStatus = this.model.status;
      this.lastEvents = this.model.events.length;
      void this.fetch();
    }
  }

  /** The build has ended but the stream has not said so yet. */
  private settle(build: IBuild): void {
    if (this.model.done || this.stream.state === 'done' || this.stream.state === 'disposed') {
      return;
    }
    if (build.last_seq <= this.model.lastSeq) {
      // Nothing more will ever come: the server has no entry after what was shown (a
      // server that crashed can lose entries it had already streamed).
      this.model.status = build.status;
      this.stream.finish();
      return;
    }
    // it ended while the stream was away: read its tail now, not after the backoff
    // (at most every 2 s, so a server refusing the stream is not hammered)
    if (Date.now() - this.settledAt > 2000) {
      this.settledAt = Date.now();
      this.stream.reconnectNow();
    }
  }

  private writeBookkeeping(): void {
    const data = this.node.dataset;
    data.lastSeq = String(this.model.lastSeq);
    data.gaps = String(this.model.gaps);
    data.lines = String(this.model.totalLines);
    data.connections = String(this.stream.connections);
    data.stream = this.stream.state;
  }

  private readonly onVisible = (): void => {
    if (document.visibilityState === 'visible') {
      this.stream.reconnectNow();
    }
  };

  /** A restart of the preview is under way (its button says so) or over. */
  previewRestarting(on: boolean): void {
    this.preview.restarting = on;
    this.preview.update();
  }

  /** The preview was restarted: its frame loads the new process's page. */
  previewRestarted(): void {
    this.preview.generation++;
    this.preview.update();
  }

  /** Show line ``seq`` (a line link). */
  revealSeq(seq: number): void {
    this.tabs.currentWidget = this.log;
    this.log.revealSeq(seq);
  }

  showTab(name: 'log' | 'artifacts' | 'preview'): void {
    this.tabs.currentWidget = name === 'log' ? this.log : name === 'artifacts' ? this.artifacts : this.preview;
  }

  private renderHeader(): void {
    this.header.update();
  }

  /** The header's content (status, facts, actions). */
  headerContent(): JSX.Element {
    const { build, trans } = this;
    const run = (command: string) => () =>
      void this.options.commands.execute(command, { id: this.buildId });
    const content = build ? (
      <div className="jp-AgentBuild-headerInner">
        <div className="jp-AgentBuild-headerTitle">
          <StatusBadge status={build.status} trans={trans} />
          <span className="jp-AgentBuild-headerName">{build.name || build.id}</span>
          <span className="jp-AgentBuild-headerActions">
            {isActive(build) && (
              <button className="jp-mod-styled jp-AgentBuild-cancel" onClick={run('agentbuild:cancel')}>
                {trans.__('Cancel')}
              </button>
            )}
            <button className="jp-mod-styled jp-AgentBuild-rerun" onClick={run('agentbuild:rerun')}>
              {trans.__('Re-run')}
            </button>
          </span>
        </div>
        <dl className="jp-AgentBuild-facts">
          <Fact label={trans.__('Build')} value={build.id} />
          {build.owner && <Fact label={trans.__('Owner')} value={build.owner} />}
          <Fact label={trans.__('Created')} value={relativeTime(build.created_at, trans)} title={build.created_at} />
          <Fact label={trans.__('Started')} value={build.started_at ? relativeTime(build.started_at, trans) : '—'} title={build.started_at ?? ''} />
          {build.finished_at && (
            <Fact label={trans.__('Finished')} value={relativeTime(build.finished_at, trans)} title={build.finished_at} />
          )}
          <Fact label={trans.__('Duration')} value={buildDuration(build) || '—'} />
          <Fact label={trans.__('Provider')} value={build.provider ?? '—'} />
          <Fact label={trans.__('Sandbox')} value={build.sandbox_id ?? '—'} />
          <Fact label={trans.__('Exit code')} value={build.exit_code === null ? '—' : String(build.exit_code)} />
        </dl>
        {build.error && <div className="jp-AgentBuild-error">{build.error}</div>}
      </div>
    ) : (
      <div className="jp-AgentBuild-headerInner">
        {this.error ? <div className="jp-AgentBuild-error">{this.error}</div> : trans.__('Loading…')}
      </div>
    );
    return content;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    window.clearInterval(this.clock);
    window.clearTimeout(this.bookkeepTimer);
    document.removeEventListener('visibilitychange', this.onVisible);
    this.stream.dispose();
    super.dispose();
  }
}

class Header extends ReactWidget {
  constructor(private readonly view: BuildView) {
    super();
  }

  render(): JSX.Element {
    return this.view.headerContent();
  }
}

function Fact(props: { label: string; value: string; title?: string }): JSX.Element {
  return (
    <div className="jp-AgentBuild-fact" title={props.title}>
      <dt>{props.label}</dt>
      <dd>{props.value}</dd>
    </div>
  );
}

interface ITreeNode {
  name: string;
  path: string;
  children: Map<string, ITreeNode>;
  file: IArtifact | null;
}

function tree(artifacts: IArtifact[]): ITreeNode {
  const root: ITreeNode = { name: '', path: '', children: new Map(), file: null };
  for (const artifact of artifacts) {
    let node = root;
    const parts = artifact.path.split('/');
    parts.forEach((part, i) => {
      let child = node.children.get(part);
      if (!child) {
        child = { name: part, path: parts.slice(0, i + 1).join('/'), children: new Map(), file: null };
        node.children.set(part, child);
      }
      node = child;
    });
    node.file = artifact;
  }
  return root;
}

function size(node: ITreeNode): number {
  return node.file ? node.file.size : Array.from(node.children.values()).reduce((s, c) => s + size(c), 0);
}

/** The artifacts: a tree with sizes, each file downloadable, HTML opened in a new tab. */
class ArtifactsTab extends ReactWidget {
  constructor(private readonly view: BuildView) {
    super();
    this.addClass('jp-AgentBuild-artifacts');
    this.title.label = view.trans.__('Artifacts');
  }

  private list: IArtifact[] | null = null;
  private total = 0;
  private error: string | null = null;
  private loadedFor = '';

  protected onAfterShow(): void {
    void this.load();
  }

  update(): void {
    if (this.isVisible) {
      void this.load();
    }
    super.update();
  }

  private async load(): Promise<void> {
    const build = this.view.build;
    const key = build ? `${build.status}:${build.artifacts?.count ?? ''}` : '';
    if (!build || key === this.loadedFor) {
      return;
    }
    this.loadedFor = key;
    try {
      const page = await this.view.options.api.artifacts(this.view.buildId);
      this.list = page.artifacts;
      this.total = page.total_size;
      this.error = null;
    } catch (error) {
      this.error = (error as Error).message;
    }
    super.update();
  }

  render(): JSX.Element {
    const { trans, buildId } = this.view;
    const api = this.view.options.api;
    const build = this.view.build;
    if (this.error) {
      return <div className="jp-AgentBuild-empty">{this.error}</div>;
    }
    if (!this.list || !build) {
      return <div className="jp-AgentBuild-empty">{trans.__('Loading…')}</div>;
    }
    if (!this.list.length) {
      return (
        <div className="jp-AgentBuild-empty">
          {isActive(build)
            ? trans.__('Artifacts are collected when the build finishes.')
            : trans.__('This build kept no artifacts.')}
        </div>
      );
    }
    const fileUrl = (path: string) => api.url('builds', buildId, 'artifacts', ...path.split('/'));
    const renderNode = (node: ITreeNode): JSX.Element => {
      if (node.file) {
        const html = /\.html?$/i.test(node.name);
        return (
          <li key={node.path} className="jp-AgentBuild-artifact" data-path={node.path}>
            <span className="jp-AgentBuild-artifactName">{node.name}</span>
            <span className="jp-AgentBuild-artifactSize">{formatSize(node.file.size)}</span>
            <a className="jp-AgentBuild-artifactDownload" href={fileUrl(node.path) + '?download=1'} download={node.name}>
              {trans.__('Download')}
            </a>
            {html && (
              <a className="jp-AgentBuild-artifactOpen" href={fileUrl(node.path)} target="_blank" rel="noopener noreferrer">
                {trans.__('Open in a new tab')}
              </a>
            )}
          </li>
        );
      }
      return (
        <li key={node.path} className="jp-AgentBuild-artifactDir">
          <details open>
            <summary>
              <span className="jp-AgentBuild-artifactName">{node.name}/</span>
              <span className="jp-AgentBuild-artifactSize">{formatSize(size(node))}</span>
            </summary>
            <ul>{Array.from(node.children.values()).map(renderNode)}</ul>
          </details>
        </li>
      );
    };
    const root = tree(this.list);
    return (
      <div className="jp-AgentBuild-artifactsInner">
        <div className="jp-AgentBuild-artifactsBar">
          <span>{trans._n('%1 file', '%1 files', this.list.length)} · {formatSize(this.total)}</span>
          <a className="jp-mod-styled jp-AgentBuild-zip" href={api.url('builds', buildId, 'artifacts.zip')} download>
            {trans.__('Download .zip')}
          </a>
          <a className="jp-mod-styled jp-AgentBuild-targz" href={api.url('builds', buildId, 'artifacts.tar.gz')} download>
            {trans.__('Download .tar.gz')}
          </a>
        </div>
        <ul className="jp-AgentBuild-artifactTree">{Array.from(root.children.values()).map(renderNode)}</ul>
      </div>
    );
  }
}

/** The preview: an iframe of ``preview.url`` (an origin of its own), open in a new tab,
 * restart, stop. */
class PreviewTab extends ReactWidget {
  constructor(private readonly view: BuildView) {
    super();
    this.addClass('jp-AgentBuild-preview');
    this.title.label = view.trans.__('Preview');
  }

  /** bumped by each restart: a new frame, as the same URL now serves a new process */
  generation = 0;
  restarting = false;

  render(): JSX.Element {
    const { trans, build } = this.view;
    const preview = build?.preview ?? null;
    if (!build || !preview) {
      return (
        <div className="jp-AgentBuild-empty">
          {trans.__('This build has no preview. Give it a preview command to see its app here.')}
        </div>
      );
    }
    if (preview.state === PreviewState.starting) {
      return <div className="jp-AgentBuild-empty">{trans.__('The preview is starting…')}</div>;
    }
    if (preview.state !== PreviewState.ready || !preview.url) {
      return (
        <div className="jp-AgentBuild-empty">
          {preview.state === PreviewState.failed ? trans.__('The preview failed.') : trans.__('The preview is stopped.')}
        </div>
      );
    }
    // An origin of its own: the preview may keep its own cookies and storage. Otherwise
    // (the path proxy on Jupyter's origin) the frame gets an opaque origin: never Jupyter's.
    const ownOrigin = new URL(preview.url, window.location.href).origin !== window.location.origin;
    const sandbox = ownOrigin
      ? 'allow-scripts allow-same-origin allow-forms allow-popups allow-modals allow-downloads'
      : 'allow-scripts allow-forms allow-popups allow-modals allow-downloads';
    return (
      <div className="jp-AgentBuild-previewInner">
        <div className="jp-AgentBuild-previewBar">
          <a className="jp-mod-styled jp-AgentBuild-previewOpen" href={preview.url} target="_blank" rel="noopener noreferrer">
            {trans.__('Open in a new tab')}
          </a>
          <button
            className="jp-mod-styled jp-AgentBuild-previewRestart"
            disabled={this.restarting}
            title={trans.__('Start the app again in the same sandbox, at the same URL')}
            onClick={() => void this.view.options.commands.execute('agentbuild:restart-preview', { id: build.id })}
          >
            {this.restarting ? trans.__('Restarting…') : trans.__('Restart preview')}
          </button>
          <button
            className="jp-mod-styled jp-AgentBuild-previewStop"
            onClick={() => void this.view.options.commands.execute('agentbuild:stop-preview', { id: build.id })}
          >
            {trans.__('Stop preview')}
          </button>
          <span className="jp-AgentBuild-hint">
            {ownOrigin
              ? trans.__('A browser that blocks third-party storage refuses the app its own cookies inside this frame: open it in a new tab then.')
              : trans.__('This server has no preview origin of its own; the preview is shown through the Jupyter server.')}
          </span>
        </div>
        <iframe
          key={this.generation}
          className="jp-AgentBuild-previewFrame"
          data-generation={this.generation}
          src={preview.url}
          title={trans.__('Preview of %1', build.name || build.id)}
          sandbox={sandbox}
        />
      </div>
    );
  }
}

export type { Widget };
