/** Status badges, relative times and sizes shared by the panel and the build tab. */
import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { IBuild, IStatus } from './contract';
import { formatDuration } from './logmodel';

/** Every status has one (a status added to the contract fails the build until it does). */
const GLYPH: Record<IStatus, string> = {
  queued: '◌',
  starting: '◔',
  running: '●',
  succeeded: '✓',
  failed: '✗',
  cancelled: '⊘',
  timed_out: '⏱',
  interrupted: '!'
};

/** A coloured icon and the status's translated name. */
export function StatusBadge(props: { status: string; trans: TranslationBundle }): JSX.Element {
  const { status, trans } = props;
  return (
    <span className={`jp-AgentBuild-badge jp-AgentBuild-${status}`} data-status={status}>
      <span className="jp-AgentBuild-statusIcon" aria-hidden="true">
        {GLYPH[status as IStatus] ?? '?'}
      </span>
      <span className="jp-AgentBuild-statusText">{statusLabel(status, trans)}</span>
    </span>
  );
}

/** The status's translated name (each a literal call, for the string extractor). */
export function statusLabel(status: string, trans: TranslationBundle): string {
  const labels: Record<IStatus, () => string> = {
    queued: () => trans.__('queued'),
    starting: () => trans.__('starting'),
    running: () => trans.__('running'),
    succeeded: () => trans.__('succeeded'),
    failed: () => trans.__('failed'),
    cancelled: () => trans.__('cancelled'),
    timed_out: () => trans.__('timed out'),
    interrupted: () => trans.__('interrupted')
  };
  return labels[status as IStatus]?.() ?? status;
}

/** "5s ago", "3 min ago", "2 h ago", else the date. */
export function relativeTime(iso: string | null, trans: TranslationBundle, now = Date.now()): string {
  if (!iso) {
    return '';
  }
  const seconds = Math.max(0, (now - Date.parse(iso)) / 1000);
  if (seconds < 60) {
    return trans.__('%1s ago', Math.floor(seconds));
  }
  if (seconds < 3600) {
    return trans.__('%1 min ago', Math.floor(seconds / 60));
  }
  if (seconds < 86400) {
    return trans.__('%1 h ago', Math.floor(seconds / 3600));
  }
  return new Date(iso).toLocaleDateString();
}

/** How long the build ran (so far, while it runs). */
export function buildDuration(build: IBuild, now = Date.now()): string {
  const start = build.started_at ?? null;
  if (!start) {
    return '';
  }
  const end = build.finished_at ? Date.parse(build.finished_at) : now;
  return formatDuration((end - Date.parse(start)) / 1000);
}

export function formatSize(bytes: number): string {
  if (bytes < 1024) {
    return `${bytes} B`;
  }
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}
