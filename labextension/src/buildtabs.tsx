/**
 * The artifacts and preview tabs of a build's tab: the artifacts as a tree with sizes and
 * downloads; the preview as an iframe of ``preview.url`` (an origin of its own) with
 * restart and stop.
 */
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { isActive } from './buildsmodel';
import type { BuildView } from './buildview';
import { IArtifact, PreviewState } from './contract';
import { formatSize } from './status';

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
export class ArtifactsTab extends ReactWidget {
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

  // The artifacts tab as one JSX tree (toolbar, archive links, the file tree).
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
export class PreviewTab extends ReactWidget {
  constructor(private readonly view: BuildView) {
    super();
    this.addClass('jp-AgentBuild-preview');
    this.title.label = view.trans.__('Preview');
  }

  /** bumped by each restart: a new frame, as the same URL now serves a new process */
  generation = 0;
  restarting = false;

  // The preview tab as one JSX tree (toolbar, hint, frame): its states are plain branches.
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
