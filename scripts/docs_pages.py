"""MkDocs hooks (``mkdocs.yml``: ``hooks``): the docs pages made from the project itself.

- ``<!-- figure: NAME.md -->`` or ``<!-- figure: NAME.md § Heading -->`` in a page is replaced by
  ``figures/NAME.md`` (or that section of it), the file the experiment wrote, so a results
  table is never copied by hand; a missing figure or section fails the build. The figures'
  images are served from ``figures/``.
- ``reference/cli.md``: every command of ``refusal-lens``, from the click commands themselves.
- ``reference/api.md``: every public name of ``refusal_lens`` (``_EXPORTS``), rendered by
  mkdocstrings from its docstring.
- ``tutorials/NAME.md``: each notebook in ``notebooks/`` with its stored outputs (text and
  figures; interactive HTML is left to the notebook itself).

Run by ``mkdocs build`` / ``mkdocs serve``; not imported by the package.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"
NOTEBOOKS = ROOT / "notebooks"
FIGURE = re.compile(r"<!-- figure: (\S+?\.md)(?: § (.+?))? -->")
HEADING = re.compile(r"^(#{1,6}) (.*)$")
IMAGE_TYPES = (".png", ".svg", ".jpg")
FIRST = "explore_a_run"  # the tutorial to start with


# ---- results: figures/*.md included where a page names them ----


def figure_section(text: str, heading: str | None) -> list[str]:
    """The lines of a figure file, or of its section under ``heading`` (without the heading)."""
    lines = text.splitlines()
    if heading is None:
        return lines
    for i, line in enumerate(lines):
        m = HEADING.match(line)
        if m and m.group(2).strip() == heading:
            level, body = len(m.group(1)), []
            for rest in lines[i + 1 :]:
                n = HEADING.match(rest)
                if n and len(n.group(1)) <= level:
                    break
                body.append(rest)
            return body
    raise PluginError(f"figures: no section {heading!r} in the figure file (its headings changed?)")


def relevel(lines: list[str], below: int) -> list[str]:
    """Headings shifted so that the figure's top level sits one below the page's ``below``."""
    levels = [len(m.group(1)) for line in lines if (m := HEADING.match(line))]
    if not levels:
        return lines
    shift = below + 1 - min(levels)
    out = []
    for line in lines:
        m = HEADING.match(line)
        out.append(f"{'#' * min(6, len(m.group(1)) + shift)} {m.group(2)}" if m else line)
    return out


def include_figures(markdown: str, page_path: str) -> str:
    """Replace each figure marker with the figure file's text (links made relative to it)."""
    to_figures = "../" * page_path.count("/") + "figures/"
    level, out = 1, []
    for line in markdown.splitlines():
        m = HEADING.match(line)
        if m:
            level = len(m.group(1))
        f = FIGURE.fullmatch(line.strip())
        if not f:
            out.append(line)
            continue
        path = FIGURES / f.group(1)
        if not path.is_file():
            raise PluginError(f"{page_path}: figure {f.group(1)} not found in figures/")
        body = relevel(figure_section(path.read_text(), f.group(2)), level)
        folder = to_figures + str(Path(f.group(1)).parent / "").lstrip("./")
        text = re.sub(r"\]\((?!https?:|#|/)([^)]+)\)", rf"]({folder}\1)", "\n".join(body))
        text = text.replace("] [", "] \\[")  # "[0, 1, 2] [95 % …]" is text, not a reference link
        out.append(f"{text}\n\n*Generated from `figures/{f.group(1)}`.*")
    return "\n".join(out) + "\n"


# ---- reference: the CLI and the API ----


def option_row(param: Any) -> str:
    """One table row: the option's names, what it takes, its default and its help."""
    import click

    names = ", ".join(f"`{n}`" for n in [*param.opts, *param.secondary_opts])
    if isinstance(param.type, click.Choice):
        takes = " \\| ".join(f"`{c}`" for c in param.type.choices)
    else:
        takes = "flag" if getattr(param, "is_flag", False) else param.type.name.lower()
    default = param.default
    shown = "" if default in (None, (), [], "") or callable(default) else f"`{default}`"
    text = (getattr(param, "help", None) or "").replace("|", "\\|").replace("\n", " ")
    return f"| {names} | {takes} | {shown} | {text} |"


def command_markdown(name: str, command: Any) -> str:
    """One command's section: usage, its help as written, arguments and visible options."""
    import click

    ctx = click.Context(command, info_name=f"refusal-lens {name}")
    lines = [f"## `refusal-lens {name}`", "", "```text", command.get_usage(ctx), "```", ""]
    lines += [(command.help or "").strip(), ""]
    if command.epilog:
        lines += ["```text", command.epilog.strip(), "```", ""]
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    arguments = [p for p in params if isinstance(p, click.Argument)]
    if arguments:
        lines += ["Arguments: " + ", ".join(f"`{p.human_readable_name}`" for p in arguments), ""]
    options = [p for p in params if isinstance(p, click.Option)]
    if options:
        lines += ["| option | takes | default | description |", "|---|---|---|---|"]
        lines += [option_row(p) for p in options]
    return "\n".join(lines) + "\n"


def cli_page() -> str:
    import typer

    from refusal_lens import __version__
    from refusal_lens.cli import app

    group = typer.main.get_command(app)
    parts = [
        "# CLI reference",
        "",
        f"Every command of `refusal-lens` {__version__}, generated from the commands themselves "
        "(`refusal-lens COMMAND --help` prints the same). Options hidden from `--help` (old "
        "names kept for one release) are left out.",
        "",
    ]
    for name, command in group.commands.items():
        if not command.hidden:
            parts.append(command_markdown(name, command))
    return "\n".join(parts)


def api_page() -> str:
    import refusal_lens

    parts = [
        "# API reference",
        "",
        "Every public name, importable from the top level (`from refusal_lens import "
        "find_direction`), grouped by the module that defines it, in the order the data flows.",
        "",
    ]
    current = None
    for name, module in refusal_lens._EXPORTS.items():
        if module != current:
            parts += [f"## `{module}`", ""]
            current = module
        parts += [f"::: {module}.{name}", "    options:", "      heading_level: 3", ""]
    return "\n".join(parts)


# ---- tutorials: the notebooks with their stored outputs ----


def output_markdown(output: dict[str, Any], images: dict[str, bytes], stem: str) -> str:
    """One stored cell output as Markdown: text as a block, a PNG as an image file."""
    if output.get("output_type") == "stream":
        if output.get("name") != "stdout":
            return ""
        return "```text\n" + "".join(output["text"]).rstrip() + "\n```"
    data = output.get("data", {})
    if "image/png" in data:
        name = f"{stem}-{len(images) + 1}.png"
        images[name] = base64.b64decode(data["image/png"])
        return f"![output]({name})"
    if "text/html" in data:
        return "*(interactive output: run the notebook to see it)*"
    if "text/plain" in data:
        return "```text\n" + "".join(data["text/plain"]).rstrip() + "\n```"
    return ""


def notebook_markdown(path: Path) -> tuple[str, dict[str, bytes]]:
    """A notebook as a page: Markdown cells as written, code cells and their outputs."""
    notebook = json.loads(path.read_text())
    images: dict[str, bytes] = {}
    parts = []
    for cell in notebook["cells"]:
        source = "".join(cell["source"]).rstrip()
        if cell["cell_type"] == "markdown":
            parts.append(source)
        elif cell["cell_type"] == "code" and source:
            parts.append(f"```python\n{source}\n```")
            outputs = (output_markdown(o, images, path.stem) for o in cell.get("outputs", []))
            parts += [text for text in outputs if text]
    link = f"*From `notebooks/{path.name}`: open it in Jupyter to run it.*"
    return "\n\n".join([*parts[:1], link, *parts[1:]]) + "\n", images


def tutorial_pages() -> dict[str, str | bytes]:
    pages: dict[str, str | bytes] = {}
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        text, images = notebook_markdown(path)
        pages[f"tutorials/{path.stem}.md"] = text
        pages.update({f"tutorials/{name}": data for name, data in images.items()})
    return pages


# ---- the hooks ----


def on_config(config: Any) -> Any:
    """The Tutorials section of the nav lists the notebooks, in file order."""
    for entry in config["nav"]:
        if isinstance(entry, dict) and "Tutorials" in entry:
            # the first tutorial reads a finished run; the rest in file order
            notebooks = sorted(NOTEBOOKS.glob("*.ipynb"), key=lambda p: (p.stem != FIRST, p.stem))
            entry["Tutorials"] = [f"tutorials/{p.stem}.md" for p in notebooks]
    return config


def on_files(files: Files, config: Any) -> Files:
    """Add the generated pages, the notebooks' images and the figures' images."""
    generated: dict[str, str | bytes] = {
        "changelog.md": (ROOT / "CHANGELOG.md").read_text(),
        "reference/cli.md": cli_page(),
        "reference/api.md": api_page(),
        **tutorial_pages(),
    }
    for uri, content in generated.items():
        files.append(File.generated(config, uri, content=content))
    for image in sorted(FIGURES.rglob("*")):
        if image.suffix in IMAGE_TYPES:
            uri = f"figures/{image.relative_to(FIGURES).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(image)))
    return files


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    return include_figures(markdown, page.file.src_uri)
