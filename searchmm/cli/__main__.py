"""`python -m searchmm.cli`: the same command as `searchmm`."""

from searchmm.cli.app import main

main()
