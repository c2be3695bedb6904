"""Build and serve the Studio: load the shared model, build the wired page, launch it (optionally behind a login).

With `auth`, Gradio's own login guards the page's configuration, every API endpoint, the
queue and the file downloads; only the login page itself is served without it.
"""
from __future__ import annotations

import threading

import gradio as gr

from ..diagnostics import measures
from .examples import ASSETS
from .registry import Studio, StudioConfig
from .wiring import StudioUI


def build_app(cfg: StudioConfig) -> tuple[gr.Blocks, Studio]:
    """Load the model and checkpoints and build the page (not launched)."""
    studio = Studio(cfg)
    studio.warm_up()
    demo = StudioUI(studio).build()
    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.max_queue)
    return demo, studio


def theme() -> gr.themes.Base:
    """A calm theme with local fonts only (no requests to font CDNs)."""
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="teal", neutral_hue="slate",
                          font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def launch(cfg: StudioConfig, host: str = "127.0.0.1", port: int = 7860, auth: tuple[str, str] | None = None) -> None:
    """Build and serve the app; UMAP's numba kernels compile in the background meanwhile."""
    threading.Thread(target=measures.warm_umap, name="warm-umap", daemon=True).start()
    demo, studio = build_app(cfg)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            share=False,
            show_error=False,
            theme=theme(),
            auth=auth,
            auth_message="TFlow Studio: sign in with the user and password the server was started with."
            if auth
            else None,
            css_paths=[ASSETS / "style.css"],
            allowed_paths=[str(studio.downloads)],
            footer_links=["api"],
        )
    finally:
        studio.close()
