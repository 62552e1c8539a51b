VALUE = 2
def hook():
    return VALUE
class Thing:
    pass
