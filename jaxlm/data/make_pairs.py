"""`python -m jaxlm.data.make_pairs reverse OUT.tsv`: see `jaxlm.data.pairs.main`."""

from jaxlm.data.pairs import main

if __name__ == "__main__":
    main()
