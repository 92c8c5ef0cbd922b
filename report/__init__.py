"""flushbench report: figures and a written report from flushbench results files.

    PYTHONPATH=<flushbench source> /usr/bin/python3 -P -m report RESULTS.json [MORE.json ...] --out DIR

`flushbench report` runs exactly that (host/main.cc, run_report). The figures, each as SVG and PNG,
are listed in figures/__init__.py; report.md and report.html come from document/.

One module per concern:
  patterns   flushbench's pattern table (order, descriptions, memory types, operations), read from
             the results files: the report knows no pattern of its own
  model      results files as series and (pattern, footprint) groups, paced steps, neighbour runs
  neighbour  reading a neighbour run: slices, windows, idle baselines
  stats      bootstrap intervals and U tests on scipy.stats, with a fixed seed
  analysis   the comparisons both figures and document show (baselines, memory types)
  labels     numbers, sizes and intervals as text
  figures    one function per figure, drawn in parallel processes
  document   the Markdown and HTML report: sections, tables, caveats
"""
