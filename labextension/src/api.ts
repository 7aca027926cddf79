/**
 * The server extension's REST and WebSocket API, through Lab's own connection settings
 * (``serviceManager.serverSettings``): its base URL, cookie/XSRF handling, token and
 * WebSocket class. Errors are the contract's ``{"error": {...}}`` shape; anything else
 * (an HTML 404 page: the server extension is not installed or not enabled) becomes a clear
 * message instead of a JSON parse error.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { TranslationBundle } from '@jupyterlab/translation';

import { IArtifactList, IBuild, IBuildList } from './contract';
import { ISocket } from './stream';
import { WorkerSocket, workerAvailable } from './worker';

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
    readonly field?: string
  ) {
    super(message);
  }
}

/** The builds list's filters (all on the server, so they reach every build). */
export interface IListOptions {
  /** a status, or several comma-separated */
  status?: string;
  /** the name or id contains this, ignoring case */
  q?: string;
  /** the cursor of an older page */
  before?: number | null;
  limit?: number;
}

export class AgentBuildApi {
  constructor(
    readonly settings: ServerConnection.ISettings,
    private readonly trans: TranslationBundle
  ) {}

  /** Shown when the server does not answer in the contract's shape at all. */
  get missingExtension(): string {
    return this.trans.__(
      'The jupyter_agentbuild server extension is not running on this Jupyter server. Install it (pip install jupyter_agentbuild), check `jupyter server extension list`, then restart Jupyter.'
    );
  }

  /** An absolute URL of ``agentbuild/api/...`` (for links and downloads too). */
  url(...parts: string[]): string {
    return URLExt.join(this.settings.baseUrl, 'agentbuild', 'api', ...parts.map(encodeURI));
  }

  async request<T>(path: string[], init: RequestInit = {}, query = ''): Promise<T> {
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(
        this.url(...path) + query,
        init,
        this.settings
      );
    } catch (error) {
      const message = this.trans.__('Jupyter is unreachable: %1', (error as Error).message);
      throw new ApiError(message, 0, 'network');
    }
    const text = await response.text();
    let body: any = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = undefined;
    }
    if (!response.ok) {
      const error = body?.error;
      if (error && typeof error.message === 'string') {
        throw new ApiError(error.message, response.status, error.code ?? 'error', error.field);
      }
      if (response.status === 404) {
        throw new ApiError(this.missingExtension, 404, 'missing_extension');
      }
      const message = this.trans.__('The server answered %1 %2', response.status, response.statusText);
      throw new ApiError(message, response.status, 'http');
    }
    if (body === undefined) {
      throw new ApiError(this.missingExtension, response.status, 'missing_extension');
    }
    return body as T;
  }

  list(options: IListOptions): Promise<IBuildList> {
    const params = new URLSearchParams();
    params.set('limit', String(options.limit ?? 50));
    if (options.status) {
      params.set('status', options.status);
    }
    if (options.q) {
      params.set('q', options.q);
    }
    if (options.before) {
      params.set('before', String(options.before));
    }
    return this.request<IBuildList>(['builds'], {}, '?' + params.toString());
  }

  get(id: string): Promise<IBuild> {
    return this.request<IBuild>(['builds', id]);
  }

  create(spec: Record<string, any>): Promise<IBuild> {
    return this.request<IBuild>(['builds'], { method: 'POST', body: JSON.stringify(spec) });
  }

  cancel(id: string): Promise<IBuild> {
    return this.request<IBuild>(['builds', id, 'cancel'], { method: 'POST' });
  }

  stopPreview(id: string): Promise<unknown> {
    return this.request(['builds', id, 'preview', 'stop'], { method: 'POST' });
  }

  /** A fresh preview process in the same sandbox, at the same URLs: the Build, its
   * preview ready again (or failed). 409 when there is no live preview to restart. */
  restartPreview(id: string): Promise<IBuild> {
    return this.request<IBuild>(['builds', id, 'preview', 'restart'], { method: 'POST' });
  }

  remove(id: string): Promise<unknown> {
    return this.request(['builds', id], { method: 'DELETE' });
  }

  artifacts(id: string): Promise<IArtifactList> {
    return this.request<IArtifactList>(['builds', id, 'artifacts']);
  }

  /** The stream's URL for ``after``: the token appended only when Lab's settings say so. */
  streamUrl(id: string, after: number): string {
    let url =
      URLExt.join(this.settings.wsUrl, 'agentbuild', 'api', 'builds', id, 'stream') +
      `?after=${after}`;
    if (this.settings.appendToken && this.settings.token) {
      url += `&token=${encodeURIComponent(this.settings.token)}`;
    }
    return url;
  }

  /** The stream's socket: in a worker where the browser allows (a flood is then received
   * and parsed off the main thread), else Lab's WebSocket class. */
  openSocket(id: string, after: number): ISocket {
    const url = this.streamUrl(id, after);
    if (workerAvailable(this.settings.WebSocket)) {
      try {
        return new WorkerSocket(url);
      } catch {
        // a Content-Security-Policy without blob: workers: the page's own socket
      }
    }
    return new this.settings.WebSocket(url) as unknown as ISocket;
  }
}
