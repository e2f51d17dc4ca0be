"""A module that cannot be imported: it needs a package nobody installed."""

import riverbed_no_such_package  # noqa: F401
