#!/usr/bin/python3
"""manpage.py — write a program's man page from its own --help text.

    manpage.py PROGRAM SECTION OUT [SEE_ALSO...]

The help the program prints is the one text: this only turns it into
troff. "Usage: NAME ARGS" becomes the synopsis, the line after it the
NAME line, "Heading:" lines become sections, "  TERM   text" lines (and
their deeper-indented continuations) tagged paragraphs. A program whose
help lists "Commands:" gets a COMMANDS section made of `PROGRAM help
COMMAND` for each.
"""
import os
import re
import subprocess
import sys

ITEM = re.compile(r"^  (\S.*?)(?:\s{2,}(\S.*))?$")
HEADING = re.compile(r"^[A-Z][^.]{0,60}:$")


def esc(s):
    s = s.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + s if s[:1] in (".", "'") else s


def help_of(prog, *args):
    p = subprocess.run([prog, *args], capture_output=True, text=True,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
    if p.returncode != 0 or not p.stdout.startswith("Usage: "):
        sys.exit(f"manpage.py: {prog} {' '.join(args)} printed no usage "
                 f"(exit {p.returncode}): {p.stderr.strip()}")
    return p.stdout.rstrip("\n").split("\n")


def body(lines, heading, sub):
    """troff for help lines after the usage/summary. heading: the macro
    for 'Heading:' lines (.SH at top level, bold paragraphs inside a
    command)."""
    out, in_item = [], False
    for line in lines:
        if not line.strip():
            out.append(".PP")
            in_item = False
        elif HEADING.match(line) and not sub:
            out.append(f'.SH "{esc(line[:-1]).upper()}"')
            in_item = False
        elif HEADING.match(line):
            out.append(f".PP\n.B {esc(line[:-1])}")
            in_item = False
        elif in_item and re.match(r"^\s{4,}\S", line):
            out.append(esc(line.strip()))
        elif ITEM.match(line):
            term, text = ITEM.match(line).groups()
            out.append(f".TP\n.B {esc(term)}")
            if text:
                out.append(esc(text))
            in_item = True
        else:
            if in_item:
                out.append(".PP")
            out.append(esc(line.strip()))
            in_item = False
    # Collapse runs of paragraph breaks and drop leading/trailing ones.
    text = re.sub(r"(\.PP\n)+", ".PP\n", "\n".join(out) + "\n")
    return re.sub(r"\.PP\n(\.(SH|TP|PP))", r"\1", text)


def main():
    prog, section, outpath, *see = sys.argv[1:]
    name = os.path.basename(prog)
    lines = help_of(prog, "--help")
    usage = lines[0][len("Usage: "):]
    k = lines.index("") if "" in lines else len(lines)
    summary = " ".join(lines[1:k])
    first = summary.split(". ")[0].rstrip(".")
    rest = lines[k:]
    out = [f'.TH {name.upper()} {section} "" "lunfs" "System Administration"',
           ".SH NAME", f"{name} \\- {esc(first[0].lower() + first[1:])}",
           ".SH SYNOPSIS", f".B {name}",
           esc(usage.split(" ", 1)[1]) if " " in usage else "",
           ".SH DESCRIPTION", esc(summary)]
    text = body(rest, ".SH", False)
    out.append(text.rstrip("\n"))
    cmds = []
    if "Commands:" in rest:
        for line in rest[rest.index("Commands:") + 1:]:
            m = ITEM.match(line)
            if not m:
                break
            cmds.append(m.group(1).split()[0])
    if cmds:
        out.append('.SH "COMMANDS IN DETAIL"')
        for c in cmds:
            if c == "help":
                continue
            cl = help_of(prog, "help", c)
            out.append(f".SS {esc(cl[0][len('Usage: '):])}")
            out.append(body(cl[1:], None, True).rstrip("\n"))
    if see:
        out.append(".SH SEE ALSO")
        out.append(",\n".join(f".BR {s.replace('(', ' (')}" for s in see))
    text = "\n".join(l for l in out if l != "") + "\n"
    with open(outpath + ".tmp", "w") as f:
        f.write(text)
    os.replace(outpath + ".tmp", outpath)


main()
