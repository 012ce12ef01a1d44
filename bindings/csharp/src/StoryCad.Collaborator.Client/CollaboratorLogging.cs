using System;
using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using FfiLogLevel = StoryCad.Collaborator.Ffi.LogLevel;
using MsLogLevel = Microsoft.Extensions.Logging.LogLevel;

namespace StoryCad.Collaborator;

/// <summary>
/// Sends the Rust library's log (its <c>tracing</c> events: attempts, retries, token refreshes,
/// stream ends) to Microsoft.Extensions.Logging. The library has one logger for the whole
/// process: the last <c>UseLogger</c> wins, <see cref="ClearLogger"/> stops it.
/// </summary>
/// <remarks>
/// Records arrive synchronously on the library's own threads while the request that logged
/// waits, so the logger must be quick and thread-safe (the usual providers are). Only the
/// project's crates are forwarded (categories <c>storycad_client::client</c>, ...); they never
/// log a token. <see cref="Microsoft.Extensions.DependencyInjection.CollaboratorServiceCollectionExtensions.AddStoryCadCollaborator"/> calls
/// <see cref="UseLogger(ILoggerFactory, MsLogLevel?)"/> when an <see cref="ILoggerFactory"/> is
/// registered.
/// </remarks>
public static class CollaboratorLogging
{
    /// <summary>
    /// Forwards each record to <paramref name="loggerFactory"/>'s logger for the record's target
    /// (e.g. <c>storycad_client::client</c>), so the usual category filters apply.
    /// </summary>
    /// <param name="loggerFactory">Where the records go.</param>
    /// <param name="minimumLevel">The most verbose level the library sends; records below it
    /// are not even formatted. Default: the most verbose level enabled for the
    /// <c>storycad_client</c> category right now.</param>
    public static void UseLogger(ILoggerFactory loggerFactory, MsLogLevel? minimumLevel = null)
    {
        ArgumentNullException.ThrowIfNull(loggerFactory);
        MsLogLevel level = minimumLevel ?? MostVerboseEnabled(loggerFactory.CreateLogger("storycad_client"));
        Install(new LoggerBridge(loggerFactory.CreateLogger, single: false), level);
    }

    /// <summary>
    /// Forwards every record to <paramref name="logger"/>, with the record's target as the
    /// <c>Target</c> property of the message.
    /// </summary>
    /// <param name="logger">Where the records go.</param>
    /// <param name="minimumLevel">The most verbose level the library sends (default: the most
    /// verbose level <paramref name="logger"/> has enabled right now).</param>
    public static void UseLogger(ILogger logger, MsLogLevel? minimumLevel = null)
    {
        ArgumentNullException.ThrowIfNull(logger);
        MsLogLevel level = minimumLevel ?? MostVerboseEnabled(logger);
        Install(new LoggerBridge(_ => logger, single: true), level);
    }

    /// <summary>Stops forwarding; the logger set before is released.</summary>
    public static void ClearLogger() => Ffi.StorycadFfiMethods.ClearLogger();

    private static void Install(LoggerBridge bridge, MsLogLevel level)
    {
        if (level == MsLogLevel.None)
        {
            ClearLogger();
            return;
        }
        Ffi.StorycadFfiMethods.SetLogger(bridge, ToFfi(level));
    }

    private static MsLogLevel MostVerboseEnabled(ILogger logger)
    {
        for (MsLogLevel level = MsLogLevel.Trace; level < MsLogLevel.None; level++)
        {
            if (logger.IsEnabled(level))
            {
                return level;
            }
        }
        return MsLogLevel.None;
    }

    internal static FfiLogLevel ToFfi(MsLogLevel level) => level switch
    {
        MsLogLevel.Trace => FfiLogLevel.Trace,
        MsLogLevel.Debug => FfiLogLevel.Debug,
        MsLogLevel.Information => FfiLogLevel.Info,
        MsLogLevel.Warning => FfiLogLevel.Warn,
        _ => FfiLogLevel.Error,
    };

    internal static MsLogLevel ToMs(FfiLogLevel level) => level switch
    {
        FfiLogLevel.Trace => MsLogLevel.Trace,
        FfiLogLevel.Debug => MsLogLevel.Debug,
        FfiLogLevel.Info => MsLogLevel.Information,
        FfiLogLevel.Warn => MsLogLevel.Warning,
        _ => MsLogLevel.Error,
    };

    /// <summary>The generated <see cref="Ffi.Logger"/> over <see cref="ILogger"/>s.</summary>
    private sealed class LoggerBridge : Ffi.Logger
    {
        private readonly Func<string, ILogger> _loggerFor;
        private readonly bool _single;
        private readonly ConcurrentDictionary<string, ILogger> _loggers = new(StringComparer.Ordinal);

        public LoggerBridge(Func<string, ILogger> loggerFor, bool single)
        {
            _loggerFor = loggerFor;
            _single = single;
        }

        public void Log(Ffi.LogRecord record)
        {
            try
            {
                ILogger logger = _loggers.GetOrAdd(record.Target, _loggerFor);
                MsLogLevel level = ToMs(record.Level);
                if (!logger.IsEnabled(level))
                {
                    return;
                }
                // The message is data, never a template: it may hold braces.
                if (_single)
                {
                    logger.Log(level, "{Target}: {Message}", record.Target, record.Message);
                }
                else
                {
                    logger.Log(level, "{Message}", record.Message);
                }
            }
            catch (Exception)
            {
                // A failing logger must not fail the request that logged (the library ignores
                // the exception too, but an exception crossing the FFI costs a panic there).
            }
        }
    }
}
