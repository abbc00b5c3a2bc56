"""Lets `python -m nlp_attn` run the `nlp-attn` command line."""

import sys

from nlp_attn.cli import main

sys.exit(main())
