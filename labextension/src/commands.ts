/**
 * The commands of the Lab UI, one small registration function per family: opening a build
 * (and the URL route to a line), the list, starting builds (the form, "Build this folder"),
 * acting on a build, its preview, and its log. Each takes what it needs in one context built
 * by the plugin's activation (index.tsx). Every command id here is public: menus, the
 * palette, key bindings and tests name them.
 */
import { IRouter, JupyterFrontEnd } from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  InputDialog,
  MainAreaWidget,
  Notification,
  WidgetTracker,
  showDialog
} from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { TranslationBundle } from '@jupyterlab/translation';
import { DockLayout } from '@lumino/widgets';

import { AgentBuildApi } from './api';
import { BuildsModel, hasLivePreview, isActive } from './buildsmodel';
import { BuildView } from './buildview';
import { IBuild } from './contract';
import { askForSpec } from './form';
import { BuildsPanel, buildsIcon } from './panel';

/** The spec file "Build this folder" uses when the folder has one. */
export const SPEC_FILE = 'agentbuild.json';
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

function hasSecrets(spec: Record<string, any>): boolean {
  return Object.values(spec.env ?? {}).some((v: any) => v && typeof v === 'object' && v.secret);
}

/** The build a command is about: its argument, else the node under the context menu,
 * else the current build tab. */
function targetId(ctx: ICommandContext, args: any): string | null {
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

function findView(ctx: ICommandContext, id: string): BuildWidget | undefined {
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

/** Start a build: from the form, or from a folder (its spec file, else the form). */
function addStartCommands(ctx: ICommandContext): void {
  const { app, trans, fileBrowser, create, report } = ctx;
  const currentFolder = () => fileBrowser?.model.path ?? '';
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
}

/** Cancel a build, or start it again. */
function addRunCommands(ctx: ICommandContext): void {
  const { app, api, model, trans, create, report } = ctx;
  app.commands.addCommand(CommandIDs.cancel, {
    label: trans.__('Cancel Build'),
    isEnabled: () => {
      const id = targetId(ctx, {});
      const build = id ? model.builds.find(b => b.id === id) ?? findView(ctx, id)?.content.build : null;
      return !build || isActive(build);
    },
    execute: async args => {
      const id = targetId(ctx, args);
      if (!id) {
        return;
      }
      try {
        model.upsert(await api.cancel(id));
        void findView(ctx, id)?.content.fetch();
      } catch (error) {
        report(trans.__('Could not cancel the build'), error);
      }
    }
  });

  app.commands.addCommand(CommandIDs.rerun, {
    label: trans.__('Re-run Build'),
    caption: trans.__('Start a new build with the same spec (secrets are asked again)'),
    execute: async args => {
      const id = targetId(ctx, args);
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
}

/** Download the full log of a build, or delete the build. */
function addDownloadAndDeleteCommands(ctx: ICommandContext): void {
  const { app, api, model, trans, report } = ctx;
  app.commands.addCommand(CommandIDs.downloadLog, {
    label: trans.__('Download Build Log'),
    execute: args => {
      const id = targetId(ctx, args);
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
      const id = targetId(ctx, args);
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
        findView(ctx, id)?.dispose();
        await model.poll.refresh();
      } catch (error) {
        report(trans.__('Could not delete the build'), error);
      }
    }
  });
}

function addPreviewCommands(ctx: ICommandContext): void {
  const { app, api, model, trans, report } = ctx;
  app.commands.addCommand(CommandIDs.stopPreview, {
    label: trans.__('Stop Preview'),
    execute: async args => {
      const id = targetId(ctx, args);
      if (!id) {
        return;
      }
      try {
        await api.stopPreview(id);
        await findView(ctx, id)?.content.fetch();
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
      const id = targetId(ctx, {});
      const build = id ? findView(ctx, id)?.content.build ?? model.builds.find(b => b.id === id) : null;
      return !build || hasLivePreview(build);
    },
    execute: async args => {
      const id = targetId(ctx, args);
      if (!id) {
        return;
      }
      const view = findView(ctx, id)?.content;
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

function addToPalette(palette: ICommandPalette, trans: TranslationBundle): void {
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

/** Register every command of the UI (and, given the palette, put them in it). */
export function addCommands(
  ctx: ICommandContext,
  router: IRouter | null,
  palette: ICommandPalette | null
): void {
  addOpenCommands(ctx, router);
  addListCommands(ctx);
  addStartCommands(ctx);
  addRunCommands(ctx);
  addDownloadAndDeleteCommands(ctx);
  addPreviewCommands(ctx);
  addLogCommands(ctx);
  if (palette) {
    addToPalette(palette, ctx.trans);
  }
}
