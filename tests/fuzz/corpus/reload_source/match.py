def f(p):
    match p:
        case [1, *rest]:
            return rest
        case {'k': v}:
            return v
