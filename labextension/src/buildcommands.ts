/**
 * The commands that act on a build through the server's API: start one (the form, "Build
 * this folder"), cancel or re-run it, stop or restart its preview, download its log, delete
 * it. One small registration function per family, each taking the plugin's command context.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';

import { hasLivePreview, isActive } from './buildsmodel';
import { CommandIDs, ICommandContext, findView, targetId } from './commands';
import { IBuild } from './contract';
import { askForSpec } from './form';
import { buildsIcon } from './panel';

/** The spec file "Build this folder" uses when the folder has one. */
export const SPEC_FILE = 'agentbuild.json';

function hasSecrets(spec: Record<string, any>): boolean {
  return Object.values(spec.env ?? {}).some((v: any) => v && typeof v === 'object' && v.secret);
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

/** Register every command that acts on a build. */
export function addBuildCommands(ctx: ICommandContext): void {
  addStartCommands(ctx);
  addRunCommands(ctx);
  addPreviewCommands(ctx);
  addDownloadAndDeleteCommands(ctx);
}
