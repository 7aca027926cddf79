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
  Dialog,
  ICommandPalette,
  InputDialog,
  MainAreaWidget,
  Notification,
  WidgetTracker,
  showDialog
} from '@jupyterlab/apputils';
import { PageConfig, PathExt, URLExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator, TranslationBundle, nullTranslator } from '@jupyterlab/translation';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import { DockLayout } from '@lumino/widgets';
import * as React from 'react';

import { AgentBuildApi } from './api';
import { BuildsModel, hasLivePreview, isActive } from './buildsmodel';
import { BuildView } from './buildview';
import { IBuild, Status } from './contract';
import { askForSpec } from './form';
import { BuildsPanel, buildsIcon } from './panel';

import '../style/index.css';

const PLUGIN_ID = 'jupyter-agentbuild:panel';
/** The spec file "Build this folder" uses when the folder has one. */
export const SPEC_FILE = 'agentbuild.json';
/** The class of the notebook widget of a build, and what a build id looks like. */
const NOTEBOOK_WIDGET = 'agentbuild-build';
const BUILD_ID = /^[0-9a-f]{8,64}$/;

namespace CommandIDs {
  export const open = 'agentbuild:open';
  export const route = 'agentbuild:route';
  export const refresh = 'agentbuild:refresh';
  export const create = 'agentbuild:new';
  export const buildFolder = 'agentbuild:build-folder';
  export const cancel = 'agentbuild:cancel';
  export const rerun = 'agentbuild:rerun';
  export const stopPreview = 'agentbuild:stop-preview';
  export const restartPreview = 'agentbuild:restart-preview';
  export const downloadLog = 'agentbuild:download-log';
  export const remove = 'agentbuild:delete';
  export const toggleFollow = 'agentbuild:toggle-follow';
  export const search = 'agentbuild:search-log';
  export const showPanel = 'agentbuild:show-panel';
}

interface IOptions {
  refreshInterval: number;
  linesKept: number;
  notifications: boolean;
}

function hasSecrets(spec: Record<string, any>): boolean {
  return Object.values(spec.env ?? {}).some((v: any) => v && typeof v === 'object' && v.secret);
}

/** The Lab URL of line ``seq`` of build ``id``: opens its tab scrolled to that line. */
export function lineUrl(id: string, seq: number): string {
  const app = PageConfig.getOption('appUrl') || '/lab';
  return (
    URLExt.join(PageConfig.getBaseUrl(), app) +
    `?agentbuild=${encodeURIComponent(id)}#L${seq}`
  );
}

class RunningItem extends ReactWidget {
  constructor(
    private readonly model: BuildsModel,
    private readonly trans: TranslationBundle,
    private readonly onClick: () => void
  ) {
    super();
    this.addClass('jp-AgentBuild-statusItem');
    this.node.onclick = () => this.onClick();
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => {
          const n = this.model.running;
          return (
            <span title={this.trans.__('Agent builds running')} data-running={n}>
              {n ? this.trans._n('%1 build running', '%1 builds running', n) : ''}
            </span>
          );
        }}
      </UseSignal>
    );
  }
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
    const tracker = new WidgetTracker<MainAreaWidget<BuildView>>({ namespace: 'agentbuild' });

    const settingsLoaded = (async () => {
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
    })();

    const report = (what: string, error: unknown) =>
      Notification.error(`${what}: ${(error as Error).message}`, { autoClose: 8000 });

    /** The build a command is about: its argument, else the node under the context menu,
     * else the current build tab. */
    const targetId = (args: any): string | null => {
      if (typeof args?.id === 'string' && args.id) {
        return args.id;
      }
      const node = app.contextMenuHitTest(n => !!n.dataset?.buildId);
      if (node) {
        return node.dataset.buildId ?? null;
      }
      // the notebook widget of a build (``%%agentbuild``): its id is in its title
      const widget = app.contextMenuHitTest(n => n.classList?.contains(NOTEBOOK_WIDGET));
      if (widget) {
        for (const code of Array.from(widget.querySelectorAll('code'))) {
          const text = (code.textContent ?? '').trim();
          if (BUILD_ID.test(text)) {
            return text;
          }
        }
      }
      return tracker.currentWidget?.content.buildId ?? null;
    };
    const findView = (id: string) => tracker.find(w => w.content.buildId === id);

    const openBuild = async (
      id: string,
      seq?: number,
      tab?: 'log' | 'artifacts' | 'preview',
      activate = true,
      mode?: DockLayout.InsertMode
    ) => {
      await settingsLoaded;
      let widget = findView(id);
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

    const create = async (spec: Record<string, any>) => {
      try {
        const build = await api.create(spec);
        model.upsert(build);
        await openBuild(build.id);
        return build;
      } catch (error) {
        report(trans.__('Could not start the build'), error);
        return null;
      }
    };

    const currentFolder = () => fileBrowser?.model.path ?? '';

    app.commands.addCommand(CommandIDs.open, {
      label: args => (args.isPalette ? trans.__('Open a Build…') : trans.__('Open Build in a Tab')),
      caption: trans.__('Open a build in its own tab'),
      icon: args => (args.isPalette ? undefined : buildsIcon),
      execute: async args => {
        let id = targetId(args);
        if (!id || args.isPalette) {
          await model.poll.refresh();
          const labels = model.builds.map(b => `${b.name || b.id} (${b.id})`);
          if (!labels.length) {
            Notification.info(trans.__('No builds yet.'));
            return;
          }
          const choice = await InputDialog.getItem({
            title: trans.__('Open a build'),
            items: labels
          });
          if (!choice.button.accept || choice.value === null) {
            return;
          }
          id = model.builds[labels.indexOf(choice.value)]?.id ?? null;
          if (!id) {
            return;
          }
        }
        const seq = typeof args.seq === 'number' ? args.seq : undefined;
        const tab = args.tab as 'log' | 'artifacts' | 'preview' | undefined;
        const mode = (args.mode as DockLayout.InsertMode | undefined) ?? undefined;
        await openBuild(id, seq, tab, args.activate !== false, mode);
      }
    });

    app.commands.addCommand(CommandIDs.route, {
      label: trans.__('Open the Build of the URL'),
      execute: async args => {
        const location = args as unknown as IRouter.ILocation;
        const params = new URLSearchParams(location.search ?? '');
        const id = params.get('agentbuild');
        if (!id) {
          return;
        }
        const match = /^#L(\d+)$/.exec(location.hash ?? '');
        // not awaited: Lab's restoration waits for the first route to be handled
        void app.restored.then(() => openBuild(id, match ? Number(match[1]) : undefined));
      }
    });
    router?.register({ command: CommandIDs.route, pattern: /[?&]agentbuild=/, rank: 20 });

    app.commands.addCommand(CommandIDs.refresh, {
      label: trans.__('Refresh the Builds List'),
      execute: () => model.poll.refresh()
    });

    app.commands.addCommand(CommandIDs.showPanel, {
      label: trans.__('Show the Builds Panel'),
      execute: () => app.shell.activateById(panel.id)
    });

    app.commands.addCommand(CommandIDs.create, {
      label: trans.__('New Build…'),
      caption: trans.__('Start a build from a form'),
      execute: async args => {
        const workspace = typeof args.workspace === 'string' ? args.workspace : currentFolder();
        const spec = await askForSpec(trans, { workspace });
        return spec ? create(spec) : null;
      }
    });

    app.commands.addCommand(CommandIDs.buildFolder, {
      label: trans.__('Build This Folder'),
      caption: trans.__('Start a build of this folder (with its %1 if it has one)', SPEC_FILE),
      icon: buildsIcon,
      execute: async args => {
        let path = typeof args.path === 'string' ? args.path : null;
        if (path === null) {
          const item = fileBrowser?.selectedItems().next();
          const selected = item && !item.done ? item.value : null;
          path = selected?.type === 'directory' ? selected.path : currentFolder();
        }
        let spec: Record<string, any> | null = null;
        try {
          const file = await app.serviceManager.contents.get(PathExt.join(path, SPEC_FILE), {
            content: true,
            format: 'text'
          });
          try {
            spec = JSON.parse(file.content as string);
          } catch (error) {
            report(trans.__('%1 is not valid JSON', PathExt.join(path, SPEC_FILE)), error);
            return null;
          }
        } catch {
          spec = null; // no spec file: ask
        }
        if (spec) {
          if (hasSecrets(spec)) {
            spec = await askForSpec(trans, { spec, workspace: path });
            if (!spec) {
              return null;
            }
          }
          return create({ ...spec, workspace: spec.workspace ?? path });
        }
        const asked = await askForSpec(trans, {
          workspace: path,
          spec: { name: PathExt.basename(path) || undefined }
        });
        return asked ? create(asked) : null;
      }
    });

    app.commands.addCommand(CommandIDs.cancel, {
      label: trans.__('Cancel Build'),
      isEnabled: () => {
        const id = targetId({});
        const build = id ? model.builds.find(b => b.id === id) ?? findView(id)?.content.build : null;
        return !build || isActive(build);
      },
      execute: async args => {
        const id = targetId(args);
        if (!id) {
          return;
        }
        try {
          model.upsert(await api.cancel(id));
          void findView(id)?.content.fetch();
        } catch (error) {
          report(trans.__('Could not cancel the build'), error);
        }
      }
    });

    app.commands.addCommand(CommandIDs.rerun, {
      label: trans.__('Re-run Build'),
      caption: trans.__('Start a new build with the same spec (secrets are asked again)'),
      execute: async args => {
        const id = targetId(args);
        if (!id) {
          return;
        }
        let build: IBuild;
        try {
          build = await api.get(id);
        } catch (error) {
          report(trans.__('Could not read the build'), error);
          return;
        }
        let spec: Record<string, any> | null = build.spec ?? {};
        if (hasSecrets(spec!) || args.edit) {
          spec = await askForSpec(trans, {
            spec: spec!,
            workspace: spec!.workspace ?? '',
            title: trans.__('Re-run %1', build.name || build.id)
          });
        }
        return spec ? create(spec) : null;
      }
    });

    app.commands.addCommand(CommandIDs.stopPreview, {
      label: trans.__('Stop Preview'),
      execute: async args => {
        const id = targetId(args);
        if (!id) {
          return;
        }
        try {
          await api.stopPreview(id);
          await findView(id)?.content.fetch();
          void model.poll.refresh();
        } catch (error) {
          report(trans.__('Could not stop the preview'), error);
        }
      }
    });

    app.commands.addCommand(CommandIDs.restartPreview, {
      label: trans.__('Restart Preview'),
      caption: trans.__('Start the preview again in the same sandbox, at the same URL (after editing its files, or when it hangs)'),
      isEnabled: () => {
        const id = targetId({});
        const build = id ? findView(id)?.content.build ?? model.builds.find(b => b.id === id) : null;
        return !build || hasLivePreview(build);
      },
      execute: async args => {
        const id = targetId(args);
        if (!id) {
          return;
        }
        const view = findView(id)?.content;
        view?.previewRestarting(true);
        try {
          const build = await api.restartPreview(id);
          model.upsert(build);
          await view?.fetch();
          view?.previewRestarted();
        } catch (error) {
          report(trans.__('Could not restart the preview'), error);
        } finally {
          view?.previewRestarting(false);
        }
      }
    });

    app.commands.addCommand(CommandIDs.downloadLog, {
      label: trans.__('Download Build Log'),
      execute: args => {
        const id = targetId(args);
        if (!id) {
          return;
        }
        const a = document.createElement('a');
        a.href = api.url('builds', id, 'logs') + '?format=text';
        a.download = `${id}.log`;
        document.body.appendChild(a);
        a.click();
        a.remove();
      }
    });

    app.commands.addCommand(CommandIDs.remove, {
      label: trans.__('Delete Build…'),
      execute: async args => {
        const id = targetId(args);
        if (!id) {
          return;
        }
        const answer = await showDialog({
          title: trans.__('Delete build %1?', id),
          body: trans.__('Its log, artifacts and sandbox are removed for good.'),
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: trans.__('Delete') })]
        });
        if (!answer.button.accept) {
          return;
        }
        try {
          await api.remove(id);
          findView(id)?.dispose();
          await model.poll.refresh();
        } catch (error) {
          report(trans.__('Could not delete the build'), error);
        }
      }
    });

    app.commands.addCommand(CommandIDs.toggleFollow, {
      label: trans.__('Follow the Log'),
      isToggled: () => !!tracker.currentWidget?.content.log.following,
      isEnabled: () => !!tracker.currentWidget,
      execute: () => {
        const log = tracker.currentWidget?.content.log;
        log?.setFollow(!log.following);
      }
    });

    app.commands.addCommand(CommandIDs.search, {
      label: trans.__('Search the Build Log'),
      isEnabled: () => !!tracker.currentWidget,
      execute: () => {
        const view = tracker.currentWidget?.content;
        if (view) {
          view.showTab('log');
          view.log.focusSearch();
        }
      }
    });

    if (palette) {
      const category = trans.__('Agent Builds');
      for (const command of [
        CommandIDs.showPanel,
        CommandIDs.create,
        CommandIDs.open,
        CommandIDs.buildFolder,
        CommandIDs.refresh,
        CommandIDs.cancel,
        CommandIDs.rerun,
        CommandIDs.stopPreview,
        CommandIDs.restartPreview,
        CommandIDs.downloadLog,
        CommandIDs.toggleFollow,
        CommandIDs.search
      ]) {
        palette.addItem({ command, category, args: { isPalette: true } });
      }
    }

    model.transition.connect((_, { build, kind }) => {
      if (!options.notifications) {
        return;
      }
      const name = build.name || build.id;
      const open = {
        label: trans.__('Open'),
        callback: () => void openBuild(build.id, undefined, kind === 'preview_ready' ? 'preview' : 'log')
      };
      if (kind === 'preview_ready') {
        Notification.info(trans.__('The preview of %1 is ready', name), {
          autoClose: 10000,
          actions: [open]
        });
      } else if (build.status === Status.succeeded) {
        Notification.success(trans.__('Build %1 succeeded', name), { autoClose: 8000, actions: [open] });
      } else {
        Notification.error(trans.__('Build %1: %2', name, build.status), {
          autoClose: 10000,
          actions: [open]
        });
      }
    });

    if (statusBar) {
      statusBar.registerStatusItem('jupyter-agentbuild:running', {
        item: new RunningItem(model, trans, () => app.shell.activateById(panel.id)),
        align: 'left',
        rank: 50,
        isActive: () => model.running > 0,
        activeStateChanged: model.changed
      });
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
