/**
 * The side panel: the user's builds, newest first, with status, name, relative start,
 * duration, provider and (under JupyterHub) owner; a status filter and a name search (both
 * on the server, so they reach every build, the search sent once the typing pauses); older
 * pages through the API's cursor. Every action is a
 * command (the buttons and the context menu run the same commands as the palette).
 */
import { PageConfig } from '@jupyterlab/coreutils';
import { TranslationBundle } from '@jupyterlab/translation';
import { LabIcon, ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import * as React from 'react';

import { BuildsModel } from './buildsmodel';
import { ACTIVE_STATUSES, PreviewState, STATUSES } from './contract';
import { StatusBadge, buildDuration, relativeTime, statusLabel } from './status';

export const buildsIcon = new LabIcon({
  name: 'jupyter-agentbuild:builds',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">' +
    '<path class="jp-icon3" fill="#616161" d="M22.7 19l-9.1-9.1c.9-2.3.4-5-1.5-6.9' +
    '-2-2-5-2.4-7.4-1.3L9 6 6 9 1.6 4.7C.4 7.1.9 10.1 2.9 12.1c1.9 1.9 4.6 2.4 6.9 1.5' +
    'l9.1 9.1c.4.4 1 .4 1.4 0l2.3-2.3c.5-.4.5-1.1.1-1.4z"/></svg>'
});

/** How long the typing must pause before the search goes to the server (ms). */
export const SEARCH_DEBOUNCE = 300;

export class BuildsPanel extends ReactWidget {
  constructor(
    readonly model: BuildsModel,
    private readonly commands: CommandRegistry,
    private readonly trans: TranslationBundle
  ) {
    super();
    this.id = 'jp-agentbuild-panel';
    this.addClass('jp-AgentBuild-panel');
    this.title.icon = buildsIcon;
    this.title.caption = trans.__('Agent builds');
  }

  private search = '';
  private searchTimer = 0;
  private loadingMore = false;

  /** The search box changed: filter what is shown at once, ask the server once the
   * typing pauses (one request per pause, not per key). The box is uncontrolled: its
   * re-render comes a frame later, and a controlled one would drop keys typed meanwhile. */
  private onSearch(value: string): void {
    this.search = value;
    this.update();
    window.clearTimeout(this.searchTimer);
    this.searchTimer = window.setTimeout(() => this.model.setSearch(value), SEARCH_DEBOUNCE);
  }

  dispose(): void {
    window.clearTimeout(this.searchTimer);
    super.dispose();
  }

  protected onAfterShow(): void {
    void this.model.poll.refresh();
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => this.content()}
      </UseSignal>
    );
  }

  // One JSX tree for the whole panel (header, filters, list, paging): longer than ~60 lines,
  // but split into pieces it would scatter one piece of markup over several functions.
  private content(): JSX.Element {
    const { model, trans, commands } = this;
    const hub = !!PageConfig.getOption('hubUser');
    // what is loaded, narrowed at once while the server's answer is on its way
    const needle = this.search.trim().toLowerCase();
    const builds = model.builds.filter(
      b => !needle || (b.name ?? '').toLowerCase().includes(needle) || b.id.includes(needle)
    );
    return (
      <div className="jp-AgentBuild-panelInner">
        <div className="jp-AgentBuild-header">
          <span className="jp-AgentBuild-heading">{trans.__('Builds')}</span>
          <button
            className="jp-mod-styled jp-AgentBuild-new"
            onClick={() => void commands.execute('agentbuild:new')}
          >
            {trans.__('New build')}
          </button>
          <button
            className="jp-mod-styled jp-AgentBuild-refresh"
            onClick={() => void commands.execute('agentbuild:refresh')}
          >
            {trans.__('Refresh')}
          </button>
        </div>
        <div className="jp-AgentBuild-filters">
          <input
            type="search"
            className="jp-mod-styled jp-AgentBuild-nameSearch"
            placeholder={trans.__('Search by name')}
            aria-label={trans.__('Search by name')}
            defaultValue={this.search}
            onChange={e => this.onSearch(e.target.value)}
          />
          <select
            className="jp-mod-styled jp-AgentBuild-statusFilter"
            aria-label={trans.__('Filter by status')}
            value={model.status}
            onChange={e => model.setStatus(e.target.value)}
          >
            <option value="">{trans.__('All')}</option>
            <option value={ACTIVE_STATUSES.join(',')}>{trans.__('Active')}</option>
            {STATUSES.map(status => (
              <option key={status} value={status}>
                {statusLabel(status, trans)}
              </option>
            ))}
          </select>
        </div>
        {model.error && <div className="jp-AgentBuild-message">{model.error}</div>}
        {model.loaded && !model.error && !builds.length && (
          <div className="jp-AgentBuild-message">
            {model.builds.length || model.search || model.status
              ? trans.__('No build matches.')
              : trans.__('No builds yet. Start one with "New build", or run %%agentbuild in a notebook.')}
          </div>
        )}
        <ul className="jp-AgentBuild-list">
          {builds.map(build => (
            <li
              key={build.id}
              className="jp-AgentBuild-item"
              data-build-id={build.id}
              data-status={build.status}
              title={`${build.id} · ${new Date(build.created_at).toLocaleString()}`}
              onClick={() => void commands.execute('agentbuild:open', { id: build.id })}
            >
              <div className="jp-AgentBuild-itemTop">
                <StatusBadge status={build.status} trans={trans} />
                <span className="jp-AgentBuild-name">{build.name || build.id}</span>
              </div>
              <div className="jp-AgentBuild-itemMeta">
                <span className="jp-AgentBuild-started">{relativeTime(build.created_at, trans)}</span>
                {buildDuration(build) && (
                  <span className="jp-AgentBuild-duration">{buildDuration(build)}</span>
                )}
                {build.provider && <span className="jp-AgentBuild-provider">{build.provider}</span>}
                {hub && build.owner && <span className="jp-AgentBuild-owner">{build.owner}</span>}
                {build.preview?.state === PreviewState.ready && (
                  <span className="jp-AgentBuild-previewReady">{trans.__('preview')}</span>
                )}
              </div>
            </li>
          ))}
        </ul>
        {model.next !== null && (
          <button
            className="jp-mod-styled jp-AgentBuild-more"
            disabled={this.loadingMore}
            onClick={async () => {
              this.loadingMore = true;
              this.update();
              try {
                await model.more();
              } finally {
                this.loadingMore = false;
                this.update();
              }
            }}
          >
            {trans.__('Older builds')}
          </button>
        )}
      </div>
    );
  }
}
