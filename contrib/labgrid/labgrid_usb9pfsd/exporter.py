"""`labgrid-usb9pfsd-exporter`: labgrid's exporter with USB9PFSBoard known to it.

Same command line as `labgrid-exporter` (this is its `main()` after one
registration); see export.py for why a wrapper is needed at all.

Must never: change anything else about labgrid's exporter.
"""

from labgrid.remote import exporter as lg_exporter

from .export import register


def main():
    register()
    lg_exporter.main()


if __name__ == "__main__":
    main()
