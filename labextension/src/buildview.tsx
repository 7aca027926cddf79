/**
 * A build's own main-area tab: a header (status, timings, provider, sandbox, exit code,
 * error, actions) above three tabs: the log (windowed, steps, search, line links), the
 * artifacts and the preview (buildtabs.tsx).
 */
import { TranslationBundle } from '@jupyterlab/translation';
import { ReactWidget } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { Panel, TabPanel, Widget } from '@lumino/widgets';
import * as React from 'react';

import { AgentBuildApi, ApiError } from './api';
import { isActive } from './buildsmodel';
import { ArtifactsTab, PreviewTab } from './buildtabs';
import { IBuild } from './contract';
import { LogModel } from './logmodel';
import { LogView } from './logview';
import { StatusBadge, buildDuration, relativeTime } from './status';
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

export type { Widget };
