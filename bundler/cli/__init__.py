"""The ``bundle`` command line: the grammar, a handler per command, rendering."""
