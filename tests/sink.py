"""What a lab PowerShell interpreter run outputs and the errors it reports, kept in lists."""


class Sink:
    def __init__(self):
        self.out, self.errors = [], []

    def output(self, item):
        self.out.append(item)

    def error(self, message, error_id=None):
        self.errors.append(message)
