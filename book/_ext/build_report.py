"""The book's build report: the ``{mmvae-build-report}`` directive becomes a table with, for every
executed chapter, its execution time and status (recorded by myst-nb) and the preset, device and
data sources it ran with (read from the ``[mmvae_lite] ...`` lines the package prints into the
chapter's outputs: ``mmvae_lite.notebook.setup()``'s header and the data loaders' banners).

myst-nb's own ``{nb-exec-table}`` has the times but not the rest, hence this small extension. The
table is filled in when pages are written, after every chapter has been read (and executed), so
the order in which pages are built does not matter.
"""
from __future__ import annotations

import re
from typing import Any

from docutils import nodes
from myst_nb.sphinx_ import NbMetadataCollector
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.docutils import SphinxDirective

TAG = "[mmvae_lite] "
KEY = "mmvae_session"          # per-document record, kept with myst-nb's metadata (merged and purged by it)
HAS_REPORT = "has_mmvae_report"
# A data loader's banner: "MNIST train: real, 60000 images (...)", "SVHN test: stand-in ..."
SOURCE = re.compile(r"^(?P<what>[A-Za-z][\w-]*(?: [\w-]+)?): (?P<kind>real|stand-in)\b")


def parse_session(lines: list[str]) -> dict[str, Any]:
    """Preset, device, data directory, torch version and data sources from the tagged lines."""
    info: dict[str, Any] = {"sources": []}
    for line in lines:
        body = line[len(TAG):].strip()
        if body.startswith(("preset:", "data:")):
            for part in body.split(" | "):
                key, sep, value = part.partition(": ")
                if sep:
                    info.setdefault(key.strip(), value.strip())
                elif part.startswith("torch "):
                    info.setdefault("torch", part[len("torch "):].strip())
        elif (m := SOURCE.match(body)) and (src := f"{m['what']}: {m['kind']}") not in info["sources"]:
            info["sources"].append(src)
    if "preset" in info:
        info["preset"] = info["preset"].split(" (")[0]
    return info


def collect_session(app: Sphinx, doctree: nodes.document) -> None:
    lines = [line for block in doctree.findall(nodes.literal_block) if "output" in block["classes"]
             for line in block.astext().splitlines() if line.startswith(TAG)]
    if lines:
        NbMetadataCollector.set_doc_data(app.env, app.env.docname, KEY, parse_session(lines))


class BuildReportNode(nodes.General, nodes.Element):
    """Placeholder, replaced by the table once every chapter has been read."""


class BuildReport(SphinxDirective):
    def run(self) -> list[nodes.Node]:
        NbMetadataCollector.set_doc_data(self.env, self.env.docname, HAS_REPORT, True)
        return [BuildReportNode()]


def reports_to_rewrite(app: Sphinx, env) -> list[str]:
    """Pages with a report are rewritten whenever the build ran, so their table is current."""
    return [d for d, data in NbMetadataCollector.get_doc_data(env).items() if data.get(HAS_REPORT)]


def _entry(content: nodes.Node | str) -> nodes.entry:
    para = nodes.paragraph()
    para += content if isinstance(content, nodes.Node) else nodes.Text(content)
    return nodes.entry("", para)


HEADER = ("Chapter", "Run time (s)", "Status", "Preset", "Device", "Data")


def make_table(docname: str, metadata: dict[str, dict]) -> nodes.table:
    table = nodes.table(classes=["colwidths-auto"])
    tgroup = nodes.tgroup(cols=len(HEADER))
    table += tgroup
    for _ in HEADER:
        tgroup += nodes.colspec(colwidth=1)
    thead, tbody = nodes.thead(), nodes.tbody()
    tgroup += thead
    tgroup += tbody
    thead += nodes.row("", *[_entry(h) for h in HEADER])
    for doc in sorted(metadata):
        exec_data, session = metadata[doc].get("exec_data"), metadata[doc].get(KEY)
        if not exec_data and not session:
            continue
        exec_data, session = exec_data or {}, session or {}
        link = pending_xref(refdoc=docname, reftarget=doc, reftype="doc", refdomain="std",
                            refexplicit=False, refwarn=True, classes=["xref", "doc"])
        link += nodes.literal(text=doc)
        runtime = exec_data.get("runtime")
        status = {True: "ran", False: f"failed ({exec_data.get('error')})"}.get(exec_data.get("succeeded"), "-")
        if exec_data.get("method"):
            status += f" ({exec_data['method']})"
        data = session.get("data", "-")
        if session.get("sources"):
            data += ": " + "; ".join(session["sources"])
        tbody += nodes.row("", _entry(link), _entry("-" if runtime is None else f"{runtime:.0f}"),
                           _entry(status), _entry(session.get("preset", "-")),
                           _entry(session.get("device", "-")), _entry(data))
    return table


class FillBuildReport(SphinxPostTransform):
    default_priority = 8  # before the references (the chapter links) are resolved

    def run(self, **kwargs: Any) -> None:
        for node in list(self.document.findall(BuildReportNode)):
            node.replace_self(make_table(self.env.docname, NbMetadataCollector.get_doc_data(self.env)))


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_node(BuildReportNode)
    app.add_directive("mmvae-build-report", BuildReport)
    app.connect("doctree-read", collect_session)
    app.connect("env-updated", reports_to_rewrite)
    app.add_post_transform(FillBuildReport)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
