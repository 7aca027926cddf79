/**
 * The commands of the Lab UI: their ids, the context they act with, and the registration
 * of those that open and show things (a build's tab and the URL route to a line, the list,
 * the log's follow and search), one small function per family. Those that act on a build
 * through the API are in buildcommands.ts. Every command id here is public: menus, the
 * palette, key bindings and tests name them.
 */
import { IRouter, JupyterFrontEnd } from '@jupyterlab/application';
import {
  ICommandPalette,
  InputDialog,
  MainAreaWidget,
  Notification,
  WidgetTracker
} from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { TranslationBundle } from '@jupyterlab/translation';
import { DockLayout } from '@lumino/widgets';

import { AgentBuildApi } from './api';
import { BuildsModel } from './buildsmodel';
import { BuildView } from './buildview';
import { IBuild } from './contract';
import { BuildsPanel, buildsIcon } from './panel';

/** The class of the notebook widget of a build, and what a build id looks like. */
const NOTEBOOK_WIDGET = 'agentbuild-build';
const BUILD_ID = /^[0-9a-f]{8,64}$/;

export namespace CommandIDs {
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

export type BuildTab = 'log' | 'artifacts' | 'preview';
export type BuildWidget = MainAreaWidget<BuildView>;

/** Open build ``id`` in its tab (made once), at line ``seq`` or on ``tab``. */
export type OpenBuild = (
  id: string,
  seq?: number,
  tab?: BuildTab,
  activate?: boolean,
  mode?: DockLayout.InsertMode
) => Promise<BuildWidget>;

/** What the commands act with: the plugin's parts, made once at activation. */
export interface ICommandContext {
  app: JupyterFrontEnd;
  api: AgentBuildApi;
  model: BuildsModel;
  panel: BuildsPanel;
  tracker: WidgetTracker<BuildWidget>;
  trans: TranslationBundle;
  fileBrowser: IDefaultFileBrowser | null;
  openBuild: OpenBuild;
  /** start a build and open its tab (null: it could not start, the user was told) */
  create: (spec: Record<string, any>) => Promise<IBuild | null>;
  /** tell the user an action failed, with the server's message */
  report: (what: string, error: unknown) => void;
}

/** The build a command is about: its argument, else the node under the context menu,
 * else the current build tab. */
export function targetId(ctx: ICommandContext, args: any): string | null {
  const { app, tracker } = ctx;
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
}

export function findView(ctx: ICommandContext, id: string): BuildWidget | undefined {
  return ctx.tracker.find(w => w.content.buildId === id);
}

/** Open a build (picked from a list when the palette asks), and the URL's route to one. */
function addOpenCommands(ctx: ICommandContext, router: IRouter | null): void {
  const { app, model, trans, openBuild } = ctx;
  app.commands.addCommand(CommandIDs.open, {
    label: args => (args.isPalette ? trans.__('Open a Build…') : trans.__('Open Build in a Tab')),
    caption: trans.__('Open a build in its own tab'),
    icon: args => (args.isPalette ? undefined : buildsIcon),
    execute: async args => {
      let id = targetId(ctx, args);
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
      const tab = args.tab as BuildTab | undefined;
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
}

function addListCommands(ctx: ICommandContext): void {
  const { app, model, panel, trans } = ctx;
  app.commands.addCommand(CommandIDs.refresh, {
    label: trans.__('Refresh the Builds List'),
    execute: () => model.poll.refresh()
  });

  app.commands.addCommand(CommandIDs.showPanel, {
    label: trans.__('Show the Builds Panel'),
    execute: () => app.shell.activateById(panel.id)
  });
}

/** Follow and search the log of the current build tab. */
function addLogCommands(ctx: ICommandContext): void {
  const { app, tracker, trans } = ctx;
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
}

export function addToPalette(palette: ICommandPalette, trans: TranslationBundle): void {
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

/** Register the commands that open and show things: a build's tab, the panel, the log's
 * follow and search (those that act on a build are in buildcommands.ts). */
export function addViewCommands(ctx: ICommandContext, router: IRouter | null): void {
  addOpenCommands(ctx, router);
  addListCommands(ctx);
  addLogCommands(ctx);
}
