"""Doc: the report's blocks (headings, paragraphs, lists, tables, figures), written once and
rendered twice, as Markdown and as a self-contained HTML page."""

import html


class Doc:
    def __init__(self):
        self.blocks = []

    def h(self, level, text):
        self.blocks.append(("h", level, text))

    def p(self, text):
        self.blocks.append(("p", text))

    def ul(self, items):
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, head, rows):
        if rows:
            self.blocks.append(("table", head, rows))

    def img(self, name, alt):
        self.blocks.append(("img", name, alt))

    def markdown(self):
        return "\n\n".join(MARKDOWN[b[0]](*b[1:]) for b in self.blocks) + "\n"

    def html(self, title):
        e = html.escape
        head = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
                "\n<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.4}"
                "table{border-collapse:collapse;font-size:0.85em;margin:1em 0}td,th{border:1px solid #bbb;padding:2px 6px;"
                "text-align:left}th{background:#eee}td.n{text-align:right}img{max-width:100%;border:1px solid #ddd}"
                "li{margin:0.2em 0}</style></head><body>")
        return "\n".join([head] + [HTML[b[0]](*b[1:]) for b in self.blocks] + ["</body></html>\n"])


def _md_cell(v):
    return str(v).replace("|", "\\|").replace("\n", " ")


def _md_table(head, rows):
    lines = ["| " + " | ".join(map(_md_cell, head)) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows])


MARKDOWN = {
    "h": lambda level, text: "#" * level + " " + text,
    "p": lambda text: text,
    "ul": lambda items: "\n".join(f"- {i}" for i in items),
    "table": _md_table,
    "img": lambda name, alt: f"![{alt}]({name}.svg)",
}


def _numeric(v):
    return isinstance(v, (int, float)) or (isinstance(v, str) and v[:1].isdigit())


def _html_table(head, rows):
    e = html.escape
    th = "".join(f"<th>{e(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td{' class=n' if _numeric(v) else ''}>{e(str(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


HTML = {
    "h": lambda level, text: f"<h{level}>{html.escape(text)}</h{level}>",
    "p": lambda text: f"<p>{html.escape(text)}</p>",
    "ul": lambda items: "<ul>" + "".join(f"<li>{html.escape(str(i))}</li>" for i in items) + "</ul>",
    "table": _html_table,
    "img": lambda name, alt: (f"<figure><a href=\"{html.escape(name)}.svg\"><img src=\"{html.escape(name)}.svg\" "
                              f"alt=\"{html.escape(alt)}\"></a><figcaption>{html.escape(alt)}</figcaption></figure>"),
}
