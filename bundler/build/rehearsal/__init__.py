"""The rehearsal: a fresh interpreter that loads the finished bundle as a service would, and the
verdict the build gives from its report."""
