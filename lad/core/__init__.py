"""The base layer every other part of LAD builds on, and which imports nothing above it: the one-line
errors and how a command reports them (``errors``, ``guard``), configuration helpers, resolvers and
the key table (``config``, ``schema``), whole-file and whole-folder writes and file locks (``fileio``,
``locks``), checks of the places a command writes (``preflight``), credentials kept out of every
output (``secrets``), SIGINT / SIGTERM handling (``signals``) and the process's device, seeds,
threads and CPU facts (``runtime``, the one module here that imports torch)."""
