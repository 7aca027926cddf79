/**
 * The JupyterLab UI of jupyter_agentbuild: a side panel of the user's builds, a main-area
 * tab per build (log by steps, artifacts, preview), a form to start one, "Build this
 * folder" in the file browser, notifications and a status-bar count of running builds.
 *
 * It talks to the server extension only through its public API (the REST list and the
 * WebSocket stream the Python client uses), with Lab's own connection settings. Every
 * action is a command; every string goes through the translator; all text from the
 * server is set as text, never as HTML: build names and logs are untrusted.
 */
import {
  ILayoutRestorer,
  IRouter,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Clipboard,
  ICommandPalette,
  MainAreaWidget,
  Notification,
  WidgetTracker
} from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator, TranslationBundle, nullTranslator } from '@jupyterlab/translation';

import { AgentBuildApi } from './api';
import { addBuildCommands } from './buildcommands';
import { BuildsModel } from './buildsmodel';
import { BuildView } from './buildview';
import {
  BuildWidget,
  CommandIDs,
  ICommandContext,
  OpenBuild,
  addToPalette,
  addViewCommands
} from './commands';
import { addRunningItem, notifyTransitions } from './notifications';
import { BuildsPanel, buildsIcon } from './panel';

import '../style/index.css';

export { SPEC_FILE } from './buildcommands';

const PLUGIN_ID = 'jupyter-agentbuild:panel';

interface IOptions {
  refreshInterval: number;
  linesKept: number;
  notifications: boolean;
}

/** The Lab URL of line ``seq`` of build ``id``: opens its tab scrolled to that line. */
export function lineUrl(id: string, seq: number): string {
  const app = PageConfig.getOption('appUrl') || '/lab';
  return (
    URLExt.join(PageConfig.getBaseUrl(), app) +
    `?agentbuild=${encodeURIComponent(id)}#L${seq}`
  );
}

/** Read the settings into ``options`` (and again whenever they change). */
async function loadSettings(
  registry: ISettingRegistry | null,
  options: IOptions,
  model: BuildsModel
): Promise<void> {
  if (!registry) {
    return;
  }
  try {
    const settings = await registry.load(PLUGIN_ID);
    const apply = () => {
      options.refreshInterval = settings.get('refreshInterval').composite as number;
      options.linesKept = settings.get('linesKept').composite as number;
      options.notifications = settings.get('notifications').composite as boolean;
      model.setInterval(options.refreshInterval);
    };
    apply();
    settings.changed.connect(apply);
  } catch (error) {
    console.warn('jupyter-agentbuild: settings not loaded', error);
  }
}

/** Open a build's tab, made on first use; resolves once the settings are read (the tab
 * keeps ``linesKept`` lines). */
function buildOpener(
  app: JupyterFrontEnd,
  api: AgentBuildApi,
  model: BuildsModel,
  tracker: WidgetTracker<BuildWidget>,
  trans: TranslationBundle,
  options: IOptions,
  settingsLoaded: Promise<void>
): OpenBuild {
  return async (id, seq?, tab?, activate = true, mode?) => {
    await settingsLoaded;
    let widget = tracker.find(w => w.content.buildId === id);
    if (!widget) {
      const content = new BuildView({
        id,
        api,
        commands: app.commands,
        trans,
        linesKept: options.linesKept,
        lineUrl,
        onLineLink: (_seq, url) => {
          Clipboard.copyToSystem(url);
          Notification.info(trans.__('Link to line %1 copied', _seq), { autoClose: 2000 });
        },
        onBuild: build => {
          if (model.builds.some(b => b.id === build.id)) {
            model.upsert(build);
          }
        }
      });
      widget = new MainAreaWidget({ content });
      widget.id = `jp-agentbuild-build-${id}`;
      widget.title.icon = buildsIcon;
      widget.title.closable = true;
      content.title.changed.connect(() => {
        widget!.title.label = content.title.label;
        widget!.title.caption = content.title.caption;
      });
      void tracker.add(widget);
      app.shell.add(widget, 'main', { mode });
    }
    if (activate) {
      app.shell.activateById(widget.id);
    }
    if (seq !== undefined) {
      widget.content.revealSeq(seq);
    } else if (tab) {
      widget.content.showTab(tab);
    }
    return widget;
  };
}

/** Start a build from ``spec`` and open its tab. */
function buildCreator(
  api: AgentBuildApi,
  model: BuildsModel,
  trans: TranslationBundle,
  openBuild: OpenBuild
): ICommandContext['create'] {
  return async spec => {
    try {
      const build = await api.create(spec);
      model.upsert(build);
      await openBuild(build.id);
      return build;
    } catch (error) {
      reportError(trans.__('Could not start the build'), error);
      return null;
    }
  };
}

function reportError(what: string, error: unknown): void {
  Notification.error(`${what}: ${(error as Error).message}`, { autoClose: 8000 });
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The builds of jupyter_agentbuild: panel, build tabs, form, notifications.',
  autoStart: true,
  optional: [
    ILayoutRestorer,
    ICommandPalette,
    ISettingRegistry,
    ITranslator,
    IStatusBar,
    IDefaultFileBrowser,
    IRouter
  ],
  activate: async (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    registry: ISettingRegistry | null,
    translator: ITranslator | null,
    statusBar: IStatusBar | null,
    fileBrowser: IDefaultFileBrowser | null,
    router: IRouter | null
  ) => {
    const trans = (translator ?? nullTranslator).load('jupyter_agentbuild');
    const api = new AgentBuildApi(app.serviceManager.serverSettings, trans);
    const options: IOptions = { refreshInterval: 5, linesKept: 200_000, notifications: true };
    const model = new BuildsModel(api, options.refreshInterval);
    const panel = new BuildsPanel(model, app.commands, trans);
    app.shell.add(panel, 'left', { rank: 700 });
    const tracker = new WidgetTracker<BuildWidget>({ namespace: 'agentbuild' });
    const settingsLoaded = loadSettings(registry, options, model);
    const openBuild = buildOpener(app, api, model, tracker, trans, options, settingsLoaded);
    const create = buildCreator(api, model, trans, openBuild);
    const context: ICommandContext = {
      app,
      api,
      model,
      panel,
      tracker,
      trans,
      fileBrowser,
      openBuild,
      create,
      report: reportError
    };
    addViewCommands(context, router);
    addBuildCommands(context);
    if (palette) {
      addToPalette(palette, trans);
    }
    notifyTransitions(model, trans, openBuild, () => options.notifications);
    if (statusBar) {
      addRunningItem(statusBar, model, trans, () => app.shell.activateById(panel.id));
    }
    if (restorer) {
      restorer.add(panel, 'agentbuild-panel');
      void restorer.restore(tracker, {
        command: CommandIDs.open,
        args: widget => ({ id: widget.content.buildId, activate: false }),
        name: widget => widget.content.buildId
      });
    }
  }
};

export default plugin;