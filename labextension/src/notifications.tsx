/**
 * What the UI tells the user outside the build tabs: a notification when a build ends or
 * its preview is ready (with a button to its tab), and the status bar's count of running
 * builds (a click shows the panel).
 */
import { Notification } from '@jupyterlab/apputils';
import { IStatusBar } from '@jupyterlab/statusbar';
import { TranslationBundle } from '@jupyterlab/translation';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import * as React from 'react';

import { BuildsModel } from './buildsmodel';
import { OpenBuild } from './commands';
import { Status } from './contract';

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

/** Show the count of running builds in the status bar; a click runs ``onClick``. */
export function addRunningItem(
  statusBar: IStatusBar,
  model: BuildsModel,
  trans: TranslationBundle,
  onClick: () => void
): void {
  statusBar.registerStatusItem('jupyter-agentbuild:running', {
    item: new RunningItem(model, trans, onClick),
    align: 'left',
    rank: 50,
    isActive: () => model.running > 0,
    activeStateChanged: model.changed
  });
}

/** Notify the user when a build ends or its preview is ready (while ``enabled()``). */
export function notifyTransitions(
  model: BuildsModel,
  trans: TranslationBundle,
  openBuild: OpenBuild,
  enabled: () => boolean
): void {
  model.transition.connect((_, { build, kind }) => {
    if (!enabled()) {
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
}
