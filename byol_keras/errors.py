"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class UsageError(ValueError):
    """Bad input from the user: a config key, a data source, a path or a flag.

    The message is one line that names the problem; the CLI prints it as
    `byol-keras: error: <message>` and exits with code 2.

    ```python
    raise UsageError("data.source: folder 'imgs/' does not exist")
    ```
    """
