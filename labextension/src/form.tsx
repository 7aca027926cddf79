/**
 * Start a build without writing JSON: a form (name, steps, workspace, artifact globs,
 * preview command and port, environment with secret fields) in a Lab dialog. It returns a
 * BuildSpec; fields the form does not show (inline files, timeouts) are kept from the spec
 * it was opened with (a re-run), and secret values are always asked again.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

interface IEnvRow {
  key: string;
  value: string;
  secret: boolean;
}

interface IFormState {
  name: string;
  steps: string;
  workspace: string;
  artifacts: string;
  previewCommand: string;
  previewPort: string;
  env: IEnvRow[];
}

function stepText(step: any): string {
  return typeof step === 'string' ? step : (step?.run ?? '');
}

/** The form's initial state from a spec (a re-run) and a default workspace. */
export function formState(spec: Record<string, any>, workspace: string): IFormState {
  const env: IEnvRow[] = Object.entries(spec.env ?? {}).map(([key, value]: [string, any]) =>
    value && typeof value === 'object'
      ? { key, value: value.secret ? '' : String(value.value ?? ''), secret: !!value.secret }
      : { key, value: String(value), secret: false }
  );
  const steps = (spec.steps ?? []) as any[];
  // a step with its own name or timeout cannot be one line: keep the spec's steps then
  return {
    name: spec.name ?? '',
    steps: steps.map(stepText).join('\n'),
    workspace: spec.workspace ?? workspace,
    artifacts: ((spec.artifacts?.paths ?? []) as string[]).join('\n'),
    previewCommand: spec.preview?.command ?? '',
    previewPort: spec.preview?.port ? String(spec.preview.port) : '',
    env
  };
}

/** The BuildSpec of a filled form, on top of ``base`` (what the form does not show). */
export function specOf(state: IFormState, base: Record<string, any>): Record<string, any> {
  const spec: Record<string, any> = { ...base };
  const lines = (text: string) =>
    text
      .split('\n')
      .map(line => line.trim())
      .filter(Boolean);
  if (state.name.trim()) {
    spec.name = state.name.trim();
  } else {
    delete spec.name;
  }
  const baseSteps = (base.steps ?? []) as any[];
  const steps = state.steps.split('\n').filter(line => line.trim());
  spec.steps = steps.map((run, i) => {
    const old = baseSteps[i];
    return old && typeof old === 'object' && stepText(old) === run ? old : run;
  });
  if (state.workspace.trim()) {
    spec.workspace = state.workspace.trim().replace(/^\/+/, '');
  } else {
    delete spec.workspace;
  }
  const globs = lines(state.artifacts);
  if (globs.length) {
    spec.artifacts = { ...(base.artifacts ?? {}), paths: globs };
  } else {
    delete spec.artifacts;
  }
  if (state.previewCommand.trim()) {
    spec.preview = { ...(base.preview ?? {}), command: state.previewCommand.trim() };
    if (state.previewPort.trim()) {
      spec.preview.port = Number(state.previewPort);
    } else {
      delete spec.preview.port;
    }
  } else {
    delete spec.preview;
  }
  const env: Record<string, any> = {};
  for (const row of state.env) {
    if (row.key.trim()) {
      env[row.key.trim()] = row.secret ? { value: row.value, secret: true } : row.value;
    }
  }
  if (Object.keys(env).length) {
    spec.env = env;
  } else {
    delete spec.env;
  }
  return spec;
}

class BuildForm extends ReactWidget {
  constructor(
    private state: IFormState,
    private readonly trans: TranslationBundle
  ) {
    super();
    this.addClass('jp-AgentBuild-form');
  }

  getValue(): IFormState {
    return this.state;
  }

  private set(patch: Partial<IFormState>): void {
    this.state = { ...this.state, ...patch };
    this.update();
  }

  // The form's markup in one JSX tree, one field per element: long, but read top to bottom
  // as the form looks; the logic lives in the small methods above.
  render(): JSX.Element {
    const { trans, state } = this;
    const field = (
      key: 'name' | 'workspace' | 'previewCommand' | 'previewPort',
      label: string,
      placeholder: string
    ) => (
      <label className="jp-AgentBuild-field">
        <span>{label}</span>
        <input
          className="jp-mod-styled"
          name={key}
          value={state[key]}
          placeholder={placeholder}
          onChange={e => this.set({ [key]: e.target.value } as Partial<IFormState>)}
        />
      </label>
    );
    const area = (key: 'steps' | 'artifacts', label: string, placeholder: string) => (
      <label className="jp-AgentBuild-field">
        <span>{label}</span>
        <textarea
          className="jp-mod-styled"
          name={key}
          rows={key === 'steps' ? 5 : 2}
          value={state[key]}
          placeholder={placeholder}
          onChange={e => this.set({ [key]: e.target.value } as Partial<IFormState>)}
        />
      </label>
    );
    const setRow = (i: number, patch: Partial<IEnvRow>) =>
      this.set({ env: state.env.map((row, j) => (i === j ? { ...row, ...patch } : row)) });
    return (
      <div className="jp-AgentBuild-formInner">
        {field('name', trans.__('Name'), trans.__('my app'))}
        {area('steps', trans.__('Steps (one shell command per line)'), 'npm ci\nnpm run build')}
        {field('workspace', trans.__('Workspace (folder, relative to the Jupyter root)'), '.')}
        {area('artifacts', trans.__('Artifacts (globs, one per line)'), 'dist/**')}
        {field('previewCommand', trans.__('Preview command (serves on $PORT)'), 'npx serve -l $PORT dist')}
        {field('previewPort', trans.__('Preview port (optional)'), '')}
        <fieldset className="jp-AgentBuild-env">
          <legend>{trans.__('Environment')}</legend>
          {state.env.map((row, i) => (
            <div className="jp-AgentBuild-envRow" key={i}>
              <input
                className="jp-mod-styled"
                name={`env-key-${i}`}
                placeholder={trans.__('NAME')}
                value={row.key}
                onChange={e => setRow(i, { key: e.target.value })}
              />
              <input
                className="jp-mod-styled"
                name={`env-value-${i}`}
                type={row.secret ? 'password' : 'text'}
                autoComplete="off"
                placeholder={row.secret ? trans.__('secret value') : trans.__('value')}
                value={row.value}
                onChange={e => setRow(i, { value: e.target.value })}
              />
              <label title={trans.__('Never shown in logs or responses')}>
                <input
                  type="checkbox"
                  name={`env-secret-${i}`}
                  checked={row.secret}
                  onChange={e => setRow(i, { secret: e.target.checked })}
                />{' '}
                {trans.__('secret')}
              </label>
              <button
                className="jp-mod-styled"
                aria-label={trans.__('Remove')}
                onClick={() => this.set({ env: state.env.filter((_, j) => j !== i) })}
              >
                ×
              </button>
            </div>
          ))}
          <button
            className="jp-mod-styled jp-AgentBuild-envAdd"
            onClick={() => this.set({ env: [...state.env, { key: '', value: '', secret: false }] })}
          >
            {trans.__('Add a variable')}
          </button>
        </fieldset>
      </div>
    );
  }
}

/** Show the form; the spec to create, or null when the user cancels. */
export async function askForSpec(
  trans: TranslationBundle,
  options: { spec?: Record<string, any>; workspace: string; title?: string }
): Promise<Record<string, any> | null> {
  const base = options.spec ?? {};
  let state = formState(base, options.workspace);
  for (;;) {
    const body = new BuildForm(state, trans);
    const result = await showDialog({
      title: options.title ?? trans.__('Start a build'),
      body,
      buttons: [Dialog.cancelButton({ label: trans.__('Cancel') }), Dialog.okButton({ label: trans.__('Start') })],
      focusNodeSelector: 'input[name="name"]'
    });
    if (!result.button.accept || !result.value) {
      return null;
    }
    state = result.value;
    if (state.steps.trim()) {
      return specOf(state, base);
    }
    await showDialog({
      title: trans.__('A build needs at least one step'),
      body: trans.__('Write one shell command per line in "Steps".'),
      buttons: [Dialog.okButton({ label: trans.__('OK') })]
    });
  }
}
