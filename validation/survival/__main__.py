"""``python -m validation.survival``: run the study set (see :func:`validation.survival.studies.main`)."""

from validation.survival.studies import main

if __name__ == "__main__":
    main()
