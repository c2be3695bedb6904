"""TFlow Studio: a Gradio app to ask, compare and inspect weight-space communication between agents.

Modules, by concern (imports go down this list only, into the library below it):
  cli.py             `tflow-studio` / `python app.py`: arguments, login, start-up warnings
  server.py          build the app and launch it (Gradio's auth when a login is set)
  wiring.py          event handlers and their wiring (`StudioUI`)
  page.py            the page's layout: tabs and components (`Page`)
  causal_section.py  the Perturbation tab's causal section (probes of `tflow.diagnostics.causal`)
  api.py             the JSON API: /ask, /causal, /health
  render.py          results as Markdown / HTML and JSON summaries
  worker.py          a run: request, worker thread and events, record, causal probes per run
  registry.py        the shared backbone, the checkpoints that fit it, pipelines, examples
Nothing is imported here, so `tflow-studio` can set its offline environment before gradio loads.
"""
