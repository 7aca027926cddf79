/**
 * The JupyterLab side panel of jupyter_agentbuild: the user's builds, newest first, and the
 * selected one followed live (status, log, preview and artifacts links).
 *
 * It talks to the server extension only through its public API (the same REST list and
 * WebSocket stream the Python client uses), with Lab's own connection settings: the user's
 * cookie or token, never anything else. All text is set as text (never as HTML): build
 * names and logs are untrusted.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import '../style/index.css';

/** How often (ms) the list is refreshed while the panel is visible. */
const LIST_INTERVAL = 3000;
/** Log lines kept in the panel (the full log stays one click away). */
const MAX_LINES = 2000;

interface IBuild {
  id: string;
  name: string | null;
  status: string;
  created_at: string;
  exit_code: number | null;
  error: string | null;
  preview: { state: string; url?: string } | null;
  artifacts: { count?: number; removed?: string | null } | null;
  last_seq: number;
}

interface IEntry {
  seq: number;
  kind: string;
  stream?: string;
  text?: string;
  type?: string;
  data?: { status?: string };
}

const icon = new LabIcon({
  name: 'jupyter-agentbuild:builds',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">' +
    '<path class="jp-icon3" fill="#616161" d="M22.7 19l-9.1-9.1c.9-2.3.4-5-1.5-6.9' +
    '-2-2-5-2.4-7.4-1.3L9 6 6 9 1.6 4.7C.4 7.1.9 10.1 2.9 12.1c1.9 1.9 4.6 2.4 6.9 1.5' +
    'l9.1 9.1c.4.4 1 .4 1.4 0l2.3-2.3c.5-.4.5-1.1.1-1.4z"/></svg>'
});

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** The panel: a list of builds above the selected build's live view. */
export class BuildsPanel extends Widget {
  private readonly settings = ServerConnection.makeSettings();
  private readonly list = element('ul', 'jp-AgentBuild-list');
  private readonly message = element('div', 'jp-AgentBuild-message');
  private readonly detail = element('div', 'jp-AgentBuild-detail');
  private readonly title_ = element('div', 'jp-AgentBuild-detailTitle');
  private readonly status = element('span', 'jp-AgentBuild-status');
  private readonly links = element('div', 'jp-AgentBuild-links');
  private readonly log = element('pre', 'jp-AgentBuild-log');
  private selected: string | null = null;
  /** The shown log lines, oldest first (at most MAX_LINES). */
  private lines: string[] = [];
  private socket: WebSocket | null = null;
  private timer: number | null = null;

  constructor() {
    super();
    this.id = 'jp-agentbuild-panel';
    this.addClass('jp-AgentBuild-panel');
    this.title.icon = icon;
    this.title.caption = 'Agent builds';
    const header = element('div', 'jp-AgentBuild-header');
    header.appendChild(element('span', 'jp-AgentBuild-heading', 'Builds'));
    const refresh = element('button', 'jp-AgentBuild-refresh jp-mod-styled', 'Refresh');
    refresh.onclick = () => void this.refresh();
    header.appendChild(refresh);
    const heading = element('div', 'jp-AgentBuild-detailHeading');
    heading.append(this.title_, this.status);
    this.detail.append(heading, this.links, this.log);
    this.detail.hidden = true;
    this.node.append(header, this.message, this.list, this.detail);
  }

  protected onAfterShow(): void {
    void this.refresh();
    this.timer = window.setInterval(() => void this.refresh(), LIST_INTERVAL);
  }

  protected onBeforeHide(): void {
    if (this.timer !== null) {
      window.clearInterval(this.timer);
      this.timer = null;
    }
  }

  dispose(): void {
    this.onBeforeHide();
    this.socket?.close();
    super.dispose();
  }

  private url(...parts: string[]): string {
    return URLExt.join(this.settings.baseUrl, 'agentbuild', 'api', ...parts);
  }

  /** Reload the list (the newest 50 builds); a failure is shown, never thrown. */
  async refresh(): Promise<void> {
    let builds: IBuild[];
    try {
      const response = await ServerConnection.makeRequest(
        this.url('builds') + '?limit=50',
        {},
        this.settings
      );
      const body = await response.json();
      if (!response.ok) {
        throw new Error(body?.error?.message ?? `HTTP ${response.status}`);
      }
      builds = body.builds as IBuild[];
    } catch (error) {
      this.message.textContent = `Could not list builds: ${(error as Error).message}`;
      return;
    }
    this.message.textContent = builds.length ? '' : 'No builds yet. Run %%agentbuild in a notebook.';
    this.list.replaceChildren(...builds.map(build => this.item(build)));
    const current = builds.find(build => build.id === this.selected);
    if (current) {
      this.showBuild(current);
    }
  }

  private item(build: IBuild): HTMLLIElement {
    const li = element('li', 'jp-AgentBuild-item');
    li.dataset.buildId = build.id;
    if (build.id === this.selected) {
      li.classList.add('jp-mod-selected');
    }
    li.append(
      element('span', 'jp-AgentBuild-name', build.name || build.id),
      element('span', `jp-AgentBuild-badge jp-AgentBuild-${build.status}`, build.status)
    );
    li.title = `${build.id} · created ${new Date(build.created_at).toLocaleString()}`;
    li.onclick = () => this.select(build);
    return li;
  }

  /** Follow one build: its log from the start, live, over the WebSocket stream. */
  select(build: IBuild): void {
    this.selected = build.id;
    for (const li of Array.from(this.list.children)) {
      li.classList.toggle('jp-mod-selected', (li as HTMLElement).dataset.buildId === build.id);
    }
    this.socket?.close();
    this.lines = [];
    this.log.textContent = '';
    this.detail.hidden = false;
    this.showBuild(build);
    const token = this.settings.token ? `&token=${encodeURIComponent(this.settings.token)}` : '';
    // only the tail the panel keeps (entries are lines or events, so this is an upper bound)
    const after = Math.max(0, build.last_seq - MAX_LINES);
    const wsUrl =
      URLExt.join(this.settings.wsUrl, 'agentbuild', 'api', 'builds', build.id, 'stream') +
      `?after=${after}${token}`;
    const socket = new WebSocket(wsUrl);
    this.socket = socket;
    socket.onmessage = event => {
      if (this.socket === socket) {
        this.append(JSON.parse(event.data) as IEntry[]);
      }
    };
    socket.onclose = () => {
      if (this.socket === socket) {
        this.socket = null;
        void this.refresh();
      }
    };
  }

  private showBuild(build: IBuild): void {
    this.title_.textContent = build.name || build.id;
    this.setStatus(build.status, build.exit_code, build.error);
    const links: HTMLElement[] = [];
    const logUrl = this.url('builds', build.id, 'logs') + '?format=text';
    links.push(this.link('Full log', logUrl));
    const artifacts = build.artifacts;
    if (artifacts?.count && !artifacts.removed) {
      const zip = this.url('builds', build.id, 'artifacts.zip');
      links.push(this.link(`Artifacts (${artifacts.count}, zip)`, zip));
    }
    if (build.preview?.state === 'ready' && build.preview.url) {
      links.push(this.link('Open preview', build.preview.url));
      links.push(this.action('Stop preview', build, 'preview/stop'));
    }
    if (ACTIVE.has(build.status)) {
      links.push(this.action('Cancel', build, 'cancel'));
    }
    this.links.replaceChildren(...links);
  }

  /** A button that POSTs ``builds/{id}/{verb}`` (cancel, preview/stop), then refreshes. */
  private action(text: string, build: IBuild, verb: string): HTMLButtonElement {
    const button = element('button', 'jp-AgentBuild-action jp-mod-styled', text);
    button.onclick = async () => {
      button.disabled = true;
      try {
        const response = await ServerConnection.makeRequest(
          this.url('builds', build.id, ...verb.split('/')),
          { method: 'POST' },
          this.settings
        );
        if (!response.ok) {
          const body = await response.json().catch(() => null);
          throw new Error(body?.error?.message ?? `HTTP ${response.status}`);
        }
        this.message.textContent = '';
      } catch (error) {
        this.message.textContent = `${text} failed: ${(error as Error).message}`;
      }
      await this.refresh();
    };
    return button;
  }

  private link(text: string, href: string): HTMLAnchorElement {
    const a = element('a', 'jp-AgentBuild-link', text);
    a.href = href;
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    return a;
  }

  private setStatus(status: string, exitCode?: number | null, error?: string | null): void {
    this.status.className = `jp-AgentBuild-status jp-AgentBuild-badge jp-AgentBuild-${status}`;
    const detail = error ? ` (${error})` : exitCode ? ` (exit ${exitCode})` : '';
    this.status.textContent = status + detail;
  }

  private append(entries: IEntry[]): void {
    const lines: string[] = [];
    for (const entry of entries) {
      if (entry.kind === 'log') {
        lines.push(entry.text ?? '');
      } else if (entry.type === 'status' && entry.data?.status) {
        this.setStatus(entry.data.status);
      }
    }
    if (!lines.length) {
      return;
    }
    const atBottom = this.log.scrollTop + this.log.clientHeight >= this.log.scrollHeight - 4;
    this.lines.push(...lines);
    if (this.lines.length > MAX_LINES) {
      // trim in bulk (a quarter at a time), then show the kept lines once
      this.lines = this.lines.slice(this.lines.length - Math.floor(MAX_LINES * 0.75));
      this.log.textContent = this.lines.join('\n') + '\n';
    } else {
      this.log.append(lines.join('\n') + '\n');  // only the new text: a text node
    }
    if (atBottom) {
      this.log.scrollTop = this.log.scrollHeight;
    }
  }
}

const ACTIVE = new Set(['queued', 'starting', 'running']);

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-agentbuild:panel',
  description: 'The builds of jupyter_agentbuild, followed live, in the left side bar.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    app.shell.add(new BuildsPanel(), 'left', { rank: 700 });
  }
};

export default plugin;
